"""A minimal y-websocket client: the one client the benchmark uses against every server.

It is built on pycrdt's protocol helpers and a small websocket client of its own (RFC
6455 over an asyncio protocol), and shares no code with jupyter_rooms, so the figures
measure each server and not a client tuned for one of them. On the wire it does what a
Yjs ``WebsocketProvider`` does and nothing more: send sync step 1 on connecting, answer
the server's step 1, apply step 2 and live updates, send each local change as a live
update of its own (one message per change, written at once), ignore awareness.

A client has to read fast enough not to be what a server benchmark measures: frames are
parsed straight from each chunk the socket gives, and the updates of one chunk are
applied to the document in one transaction (so a reader that receives 5,000 small
updates in a few reads does not pay 5,000 transactions and 5,000 wake-ups).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

from pycrdt import (
    Doc,
    TransactionEvent,
    YMessageType,
    YSyncMessageType,
    create_sync_message,
    create_update_message,
    handle_sync_message,
    read_message,
)

MAX_MESSAGE_SIZE = 256 * 1024 * 1024
EMPTY_UPDATE = b"\x00\x00"
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HEADER_LIMIT = 64 * 1024

# Opcodes (RFC 6455, 5.2).
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def _mask(payload: bytes, key: bytes) -> bytes:
    """The payload XOR the repeated 4-byte key (as a client must send it)."""
    size = len(payload)
    if not size:
        return payload
    keys = key * (size // 4 + 1)
    value = int.from_bytes(payload, "little") ^ int.from_bytes(keys[:size], "little")
    return value.to_bytes(size, "little")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    key = os.urandom(4)
    return header + key + _mask(payload, key)


class HandshakeError(ConnectionError):
    """The server did not upgrade the connection to a websocket."""


class _Protocol(asyncio.Protocol):
    """The websocket connection: the upgrade, then frames in and out."""

    def __init__(self, client: YClient, request: bytes, key: bytes) -> None:
        self.client = client
        client._protocol = self
        self.request = request
        self.accept = base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())
        self.transport: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = bytearray()
        self.fragments: bytearray | None = None
        self.fragment_opcode = 0
        self.close_code: int | None = None
        self.paused = False
        self.resumed: asyncio.Event = asyncio.Event()
        self.resumed.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or ConnectionError("the connection ended"))
        if not self.lost.done():
            self.lost.set_result(None)
        self.resumed.set()
        self.client._ended(exc)

    def pause_writing(self) -> None:
        self.resumed.clear()

    def resume_writing(self) -> None:
        self.resumed.set()

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(opcode, payload))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > _HEADER_LIMIT:
                    self._fail(HandshakeError("the server's response has no end of headers"))
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[: end + 4]
            error = self._check_upgrade(head)
            if error is not None:
                self._fail(error)
                return
            self.upgraded.set_result(None)
        messages = self._parse_frames()
        if messages:
            self.client._receive(messages)

    def _check_upgrade(self, head: str) -> HandshakeError | None:
        status, *lines = head.split("\r\n")
        if status.split(" ", 2)[1:2] != ["101"]:
            return HandshakeError(f"the server answered {status!r}")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept", "").encode() != self.accept:
            return HandshakeError("the server's Sec-WebSocket-Accept does not match")
        return None

    def _fail(self, error: Exception) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def _parse_frames(self) -> list[bytes]:
        """Every complete message in the buffer (what is left waits for more data)."""
        buffer = self.buffer
        size = len(buffer)
        pos = 0
        messages: list[bytes] = []
        while size - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, start)
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            key = None
            if second & 0x80:
                key = bytes(buffer[start : start + 4])
                start += 4
            end = start + length
            if end > size:
                break
            if length > MAX_MESSAGE_SIZE:
                self._fail(ConnectionError(f"a frame of {length} bytes is too large"))
                break
            payload = bytes(buffer[start:end])
            if key is not None:
                payload = _mask(payload, key)
            pos = end
            opcode = first & 0x0F
            final = bool(first & 0x80)
            if opcode >= _CLOSE:
                self._control(opcode, payload)
                continue
            if opcode == _CONTINUATION:
                if self.fragments is None:
                    self._fail(ConnectionError("a continuation frame continues nothing"))
                    break
                self.fragments += payload
                if not final:
                    continue
                opcode, payload = self.fragment_opcode, bytes(self.fragments)
                self.fragments = None
            elif not final:
                self.fragment_opcode, self.fragments = opcode, bytearray(payload)
                continue
            messages.append(payload if opcode == _BINARY else b"")
        if pos:
            del buffer[:pos]
        return messages

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == _PING:
            self.send(_PONG, payload)
        elif opcode == _CLOSE:
            if self.close_code is None:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.send(_CLOSE, payload[:2])
            if self.transport is not None:
                self.transport.close()

    def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.close_code is None:
            self.close_code = 1000
            self.send(_CLOSE, struct.pack("!H", 1000))
        # The server closes the TCP connection after answering.


class YClient:
    """One websocket connection to one room, with its own document.

    Use ``await YClient.open(url)``, then ``await client.close()``.

    Attributes:
        doc: The client's document.
        synced: Set once the server's sync step 2 has been applied.
        on_change: Called after each batch of received messages has been handled, and
            once when the connection ends.
        error: Why the connection ended, if it failed.
        received: How many messages have been received.
    """

    def __init__(self, doc: Doc) -> None:
        self.doc = doc
        self.synced = asyncio.Event()
        self.on_change: Callable[[], None] | None = None
        self.error: BaseException | None = None
        self.received = 0
        self._closed = False
        self._applying = False
        self._protocol: _Protocol | None = None
        self._subscription = doc.observe(self._on_local_change)

    @classmethod
    async def open(
        cls, url: str, *, headers: dict[str, str] | None = None, doc: Doc | None = None
    ) -> YClient:
        """Connect to a room and start the sync handshake (without waiting for it).

        Args:
            url: The room's websocket URL (``ws://host:port/path?query``).
            headers: HTTP headers for the upgrade request.
            doc: The document to sync; a new one by default.

        Returns:
            The connected client.
        """
        parts = urlsplit(url)
        if parts.scheme != "ws" or parts.hostname is None:
            raise ValueError(f"not a ws:// URL: {url}")
        port = parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = base64.b64encode(os.urandom(16))
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {parts.hostname}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key.decode()}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        client = cls(doc if doc is not None else Doc())
        loop = asyncio.get_running_loop()
        _, protocol = await asyncio.wait_for(
            loop.create_connection(lambda: _Protocol(client, request, key), parts.hostname, port),
            30,
        )
        try:
            await asyncio.wait_for(protocol.upgraded, 60)
        except BaseException:
            client.doc.unobserve(client._subscription)
            protocol.close()
            raise
        protocol.send(_BINARY, create_sync_message(client.doc))
        return client

    def _receive(self, messages: list[bytes]) -> None:
        """Handle the messages of one read: the updates among them in one transaction."""
        self.received += len(messages)
        updates: list[bytes] = []
        synced = False
        try:
            for message in messages:
                if len(message) < 2 or message[0] != YMessageType.SYNC:
                    continue
                kind = message[1]
                if kind == YSyncMessageType.SYNC_STEP1:
                    self._apply(updates)
                    updates = []
                    reply = handle_sync_message(message[1:], self.doc)
                    if reply is not None and self._protocol is not None:
                        self._protocol.send(_BINARY, reply)
                    continue
                update = read_message(message[2:])
                if update != EMPTY_UPDATE:
                    updates.append(update)
                if kind == YSyncMessageType.SYNC_STEP2:
                    synced = True
            self._apply(updates)
        except Exception as exc:
            self.error = exc
            if self._protocol is not None and self._protocol.transport is not None:
                self._protocol.transport.close()
            return
        if synced:
            self.synced.set()
        if self.on_change is not None:
            self.on_change()

    def _apply(self, updates: list[bytes]) -> None:
        if not updates:
            return
        self._applying = True
        try:
            if len(updates) == 1:
                self.doc.apply_update(updates[0])
            else:
                with self.doc.transaction():
                    for update in updates:
                        self.doc.apply_update(update)
        finally:
            self._applying = False

    def _on_local_change(self, event: TransactionEvent) -> None:
        if self._applying or event.update == EMPTY_UPDATE or self._protocol is None:
            return
        self._protocol.send(_BINARY, create_update_message(event.update))

    def _ended(self, exc: Exception | None) -> None:
        self._closed = True
        if exc is not None and self.error is None:
            self.error = exc
        if self.on_change is not None:
            self.on_change()

    async def flushed(self) -> None:
        """Wait until the socket takes more: the changes sent so far are in its buffer
        or the kernel's (asyncio's flow control, as a browser's ``bufferedAmount``)."""
        if self._protocol is not None:
            await self._protocol.resumed.wait()

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._closed

    async def close(self) -> None:
        """Close the connection and wait until it has ended."""
        self.doc.unobserve(self._subscription)
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            return
        protocol.close()
        try:
            await asyncio.wait_for(asyncio.shield(protocol.lost), 10)
        except asyncio.TimeoutError:
            protocol.transport.abort()
