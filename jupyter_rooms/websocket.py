"""Channels over tornado websockets, for servers (a handler) and clients (a connection).

Both the standalone websocket wire and the Jupyter server extension carry rooms over
these, so the y-websocket protocol reaches a room the same way whichever door a client
came in by.
"""

from __future__ import annotations

import logging
import struct
from asyncio import Future, get_running_loop, wait
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from anyio import Event
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from .channel import Channel, ChannelClosed, ChannelIterator
from .client import ChannelClient, FatalClose
from .protocol import TextMessage

__all__ = [
    "ClientChannel",
    "HandlerChannel",
    "WebsocketChannelClient",
    "open_client_channel",
    "write_large_message",
]

log = logging.getLogger("jupyter_rooms.websocket")

# How many received messages (and bytes) may wait for the room before the socket stops
# reading; it reads on once the room has taken half of them.
_RECEIVE_BUFFER = 1024
_RECEIVE_BYTES = 4 * 1024 * 1024
# Messages larger than this are sent in fragments of this size (see
# ``write_large_message``).
_FRAGMENT = 2 * 1024 * 1024


def _frame_header(fin: bool, opcode: int, size: int) -> bytes:
    """The header of an unmasked frame (RFC 6455, 5.2) carrying ``size`` bytes."""
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        return struct.pack("!BB", first, size)
    if size < 65_536:
        return struct.pack("!BBH", first, 126, size)
    return struct.pack("!BBQ", first, 127, size)


def write_large_message(connection: Any, message: bytes) -> Future[None] | None:
    """Write a large binary message to a server's socket in fragments (RFC 6455, 5.4) of
    2 MiB, each once the one before it is in the system's hands, the event loop free
    between them.

    Written in one go, a large message holds the event loop while it is written:
    tornado writes until the socket refuses more, and a browser on the same machine
    reading a large notebook's 9 MB sync reply keeps it writing, during which no other
    client is served. Each fragment goes to the stream in one piece, its header joined
    to its data (a copy of 2 MiB at most): every write to the socket lets the
    interpreter's other threads run, and when one of them is busy (a Jupyter server
    lists nbconvert's exporters in a thread whenever a page opens a notebook) the
    writer waits up to the switch interval, 5 ms, to go on. So the writes must be few:
    written as 256 KiB fragments, each header apart, 9.1 MB took 351 ms to reach
    Chromium from a process with a busy thread, against 52 ms as one frame and 63 ms in
    2 MiB pieces (medians, ``bench/large_write.py``). Control frames (pings, a close)
    may come between fragments; no other message may: the caller holds its own until
    the returned write is done. A socket closing meanwhile gets no more fragments.

    Args:
        connection: The handler's ``ws_connection``, without compression.
        message: The message.

    Returns:
        The write, done once the last fragment is in the stream's hands (failed with
        ``StreamClosedError`` if the socket closed first), or ``None`` when it does not
        apply (a message of 2 MiB or less, or a connection that masks what it sends):
        write the message as usual then.
    """
    if len(message) <= _FRAGMENT or getattr(connection, "mask_outgoing", True):
        return None
    stream = connection.stream
    done: Future[None] = get_running_loop().create_future()
    data = memoryview(message)

    def write_from(start: int) -> None:
        end = min(start + _FRAGMENT, len(data))
        header = _frame_header(end == len(data), 0x0 if start else 0x2, end - start)
        try:
            if connection.is_closing():
                raise StreamClosedError()
            written = stream.write(b"".join((header, data[start:end])))
        except StreamClosedError as exc:
            if not done.done():
                done.set_exception(exc)
            return
        written.add_done_callback(lambda flushed: went(flushed, end))

    def went(flushed: Future[None], end: int) -> None:
        if done.done():
            return
        failure = StreamClosedError() if flushed.cancelled() else flushed.exception()
        if failure is not None:
            done.set_exception(failure)
        elif end == len(data):
            done.set_result(None)
        else:
            write_from(end)

    write_from(0)
    return done


def _ignore_result(future: Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def fit_close_reason(reason: str) -> str:
    """A close reason cut to what a close frame carries (a control frame holds 125 bytes,
    two of them the code; tornado refuses more), on a character boundary."""
    return reason.encode()[:123].decode(errors="ignore")


class HandlerChannel(ChannelIterator):
    """The server's end of a websocket, as a [Channel][jupyter_rooms.Channel].

    The handler feeds it: ``return channel.feed(message)`` from ``on_message``, and
    ``channel.closed(code, reason)`` from ``on_close``. A message is handed over without
    a task switch: all the frames tornado has already read reach the room's inbox before
    the room runs, so the room takes a burst of a client's updates as one batch. Only
    when the inbox is full does ``feed`` return something to await, which makes tornado
    stop reading until the room has caught up (a client cannot flood the server's
    memory).

    Args:
        handler: The websocket handler (``tornado.websocket.WebSocketHandler``).
        path: The room the client asked for.
    """

    def __init__(self, handler: Any, path: str) -> None:
        self._handler = handler
        self._path = path
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        # No more messages will arrive (the socket or the channel closed).
        self._ended = False
        # Set when a message arrives for a room waiting for one.
        self._arrived: Event | None = None
        # Set when the room has made space in a full inbox.
        self._drained: Event | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        # The large message being written in fragments, if any (see ``_write``).
        self._fragmented: Future[None] | None = None

    @property
    def path(self) -> str:
        return self._path

    def feed(self, message: str | bytes) -> Awaitable[None] | None:
        """Pass a received message on to the room.

        Args:
            message: The message; a text message is passed on as a
                [TextMessage][jupyter_rooms.protocol.TextMessage], which the room
                refuses.

        Returns:
            ``None`` once the message is in the inbox; if that filled the inbox,
            something to await (return it from ``on_message``) before reading more.
        """
        if self._ended:
            return None
        data = TextMessage(message.encode()) if isinstance(message, str) else message
        self._inbox.append(data)
        self._inbox_bytes += len(data)
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None
        if len(self._inbox) < _RECEIVE_BUFFER and self._inbox_bytes < _RECEIVE_BYTES:
            return None
        if self._drained is None:
            self._drained = Event()
        return self._drained.wait()

    def _take(self) -> bytes:
        data = self._inbox.popleft()
        self._inbox_bytes -= len(data)
        if (
            self._drained is not None
            and len(self._inbox) <= _RECEIVE_BUFFER // 2
            and self._inbox_bytes <= _RECEIVE_BYTES // 2
        ):
            self._drained.set()
            self._drained = None
        return data

    def _end(self) -> None:
        self._ended = True
        for event in (self._arrived, self._drained):
            if event is not None:
                event.set()
        self._arrived = self._drained = None

    def closed(self, code: int | None, reason: str | None) -> None:
        """Record that the socket closed: iteration ends once the buffer is read."""
        if self.close_code is None:
            self.close_code = code if code is not None else 1005
            self.close_reason = reason or ""
        self._end()

    async def send(self, message: bytes) -> None:
        await self._after_fragments()
        connection = self._handler.ws_connection
        if connection is None or connection.is_closing():
            raise ChannelClosed(self._path)
        try:
            written = self._write(connection, message)
            # Not cancelled with the caller: a message cut short would leave the
            # socket in the middle of a frame.
            await wait({written})
            written.result()
        except (WebSocketClosedError, StreamClosedError):
            raise ChannelClosed(self._path) from None

    async def _after_fragments(self) -> None:
        """Wait until the large message being written in fragments is written (or the
        socket closed): nothing else may come between them."""
        fragmented = self._fragmented
        while fragmented is not None and not fragmented.done():
            # Not cancelled with the caller: the write is the socket's.
            await wait({fragmented})
            fragmented = self._fragmented

    def _write(self, connection: Any, message: bytes) -> Future[None]:
        write_frame = getattr(connection, "_write_frame", None)
        if write_frame is None or getattr(connection, "_compressor", None) is not None:
            written: Future[None] = self._handler.write_message(message, binary=True)
            return written
        fragmented = write_large_message(connection, message)
        if fragmented is not None:
            self._fragmented = fragmented
            return fragmented
        # One binary frame, straight to the stream: tornado's write_message would also
        # wrap each write in a task of its own, the largest cost of a fan-out.
        framed: Future[None] = write_frame(True, 0x2, message)
        return framed

    def send_nowait(self, message: bytes) -> bool:
        """Send one message at once, if the socket has nothing else waiting to be written.

        A room fans an update out to every client from one loop; writing straight to
        each socket spares a task switch per client and message while the clients keep
        up. Once a socket falls behind, this declines and the room queues instead.

        Args:
            message: The message.

        Returns:
            Whether the message was sent; ``False`` when earlier messages still wait in
            the socket's buffer (so the caller should queue it and ``await send``).

        Raises:
            ChannelClosed: The channel is closed.
        """
        connection = self._handler.ws_connection
        if connection is None or connection.is_closing():
            raise ChannelClosed(self._path)
        if connection.stream is None or connection.stream.writing():
            return False
        if self._fragmented is not None and not self._fragmented.done():
            return False
        try:
            written = self._write(connection, message)
        except (WebSocketClosedError, StreamClosedError):
            raise ChannelClosed(self._path) from None
        # Nobody awaits this write: a failure shows up as the socket closing.
        written.add_done_callback(_ignore_result)
        return True

    def recv_nowait(self) -> bytes | None:
        """A message already received, or ``None`` when none is waiting."""
        return self._take() if self._inbox else None

    async def recv(self) -> bytes:
        while not self._inbox:
            if self._ended:
                raise ChannelClosed(self._path)
            if self._arrived is None:
                self._arrived = Event()
            await self._arrived.wait()
        return self._take()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self._handler.close(code, fit_close_reason(reason))
        # Nobody reads what is left: let the socket go on (and end).
        self._inbox.clear()
        self._inbox_bytes = 0
        self._end()


class ClientChannel(ChannelIterator):
    """A client's websocket connection, as a [Channel][jupyter_rooms.Channel].

    Args:
        connection: An open connection from ``tornado.websocket.websocket_connect``.
        path: The room it leads to.
    """

    def __init__(self, connection: WebSocketClientConnection, path: str) -> None:
        self._connection = connection
        self._path = path
        # Updates are small messages sent in bursts (a handshake reply and the first
        # edit, say): without this, the second waits for the server's delayed
        # acknowledgement of the first, tens of milliseconds.
        if connection.protocol is not None:
            connection.protocol.set_nodelay(True)

    @property
    def path(self) -> str:
        return self._path

    @property
    def close_code(self) -> int | None:
        """The code the connection was closed with, once closed."""
        return self._connection.close_code

    @property
    def close_reason(self) -> str:
        """The reason the connection was closed with, once closed."""
        return self._connection.close_reason or ""

    async def send(self, message: bytes) -> None:
        try:
            await self._connection.write_message(message, binary=True)
        except WebSocketClosedError:
            raise ChannelClosed(self._path) from None

    async def recv(self) -> bytes:
        message = await self._connection.read_message()
        if message is None:
            raise ChannelClosed(self._path)
        return TextMessage(message.encode()) if isinstance(message, str) else message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._connection.close(code, reason)


@asynccontextmanager
async def open_client_channel(
    url: str,
    path: str,
    *,
    headers: dict[str, str],
    connect_timeout: float,
    max_message_size: int,
    refused_hint: str = "",
) -> AsyncIterator[ClientChannel]:
    """Open a websocket to a room, as a channel; leaving the block closes it.

    Args:
        url: The room's websocket URL.
        path: The room's id.
        headers: HTTP headers for the upgrade request (credentials, for one).
        connect_timeout: Seconds allowed to connect.
        max_message_size: The largest message accepted, in bytes.
        refused_hint: What to do about a refusal for want of credentials (401, 403),
            added to its message.

    Yields:
        The channel.

    Raises:
        FatalClose: The server refused the client (400, 401, 403, 404): retrying won't help.
        ConnectionError: The server could not be reached, or failed.
    """
    request = HTTPRequest(url, headers=headers, connect_timeout=connect_timeout)
    try:
        connection = await websocket_connect(request, max_message_size=max_message_size)
    except HTTPClientError as exc:
        if exc.code in (400, 401, 403, 404):
            message = exc.response.reason if exc.response is not None else str(exc)
            hint = f": {refused_hint}" if refused_hint and exc.code in (401, 403) else ""
            raise FatalClose(f"{url} refused the connection ({exc.code}: {message}){hint}") from exc
        raise ConnectionError(f"{url}: {exc}") from exc
    try:
        yield ClientChannel(connection, path)
    finally:
        connection.close()


class WebsocketChannelClient(ChannelClient):
    """A client whose channel is a websocket to ``self.url``: the base of the websocket
    and jupyter wires' clients, which differ only in how they make the URL and headers.

    Subclasses set ``url``, ``headers`` and ``max_message_size`` in their ``__init__``.
    """

    url: str
    headers: dict[str, str]
    max_message_size: int

    def _describe(self) -> str:
        return self.url

    def _refused_hint(self) -> str:
        """What to tell a user whose credentials the server refused."""
        return ""

    def _open(self) -> AbstractAsyncContextManager[Channel]:
        return open_client_channel(
            self.url,
            self.id,
            headers=self.headers,
            connect_timeout=self.timeout,
            max_message_size=self.max_message_size,
            refused_hint=self._refused_hint(),
        )
