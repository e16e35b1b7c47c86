"""A minimal y-websocket client: the one client the benchmark uses against every server.

It is built on pycrdt's own protocol helpers and tornado's websocket client, and shares
no code with jupyter_rooms, so the figures measure each server and not a client tuned
for one of them. It does what a Yjs ``WebsocketProvider`` does and nothing more: send
sync step 1 on connecting, answer the server's step 1, apply step 2 and live updates,
send local changes as live updates (one message each), ignore awareness.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pycrdt import (
    Doc,
    TransactionEvent,
    YMessageType,
    YSyncMessageType,
    create_sync_message,
    create_update_message,
    handle_sync_message,
)
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

MAX_MESSAGE_SIZE = 256 * 1024 * 1024
EMPTY_UPDATE = b"\x00\x00"


class YClient:
    """One websocket connection to one room, with its own document.

    Use ``await YClient.open(url)``, then ``await client.close()``.

    Args:
        connection: An open websocket connection.
        doc: The client's document.
    """

    def __init__(self, connection: WebSocketClientConnection, doc: Doc) -> None:
        self.connection = connection
        self.doc = doc
        self.synced = asyncio.Event()
        self.on_change: Callable[[], None] | None = None
        self.error: BaseException | None = None
        self.received = 0
        self._ended = False
        self._applying = False
        self._last_write: Awaitable[None] | None = None
        self._subscription = doc.observe(self._on_local_change)
        self._reader = asyncio.ensure_future(self._read_loop())

    @classmethod
    async def open(
        cls, url: str, *, headers: dict[str, str] | None = None, doc: Doc | None = None
    ) -> YClient:
        """Connect to a room and start the sync handshake (without waiting for it).

        Args:
            url: The room's websocket URL.
            headers: HTTP headers for the upgrade request.
            doc: The document to sync; a new one by default.

        Returns:
            The connected client.
        """
        request = HTTPRequest(url, headers=headers or {}, connect_timeout=30, request_timeout=60)
        connection = await websocket_connect(request, max_message_size=MAX_MESSAGE_SIZE)
        assert connection.protocol is not None
        connection.protocol.set_nodelay(True)
        client = cls(connection, doc if doc is not None else Doc())
        await connection.write_message(create_sync_message(client.doc), binary=True)
        return client

    async def _read_loop(self) -> None:
        try:
            while True:
                message = await self.connection.read_message()
                if message is None:
                    return
                self.received += 1
                if isinstance(message, str) or message[0] != YMessageType.SYNC:
                    continue
                self._applying = True
                try:
                    reply = handle_sync_message(message[1:], self.doc)
                finally:
                    self._applying = False
                if reply is not None:
                    await self.connection.write_message(reply, binary=True)
                elif message[1] == YSyncMessageType.SYNC_STEP2:
                    self.synced.set()
                if self.on_change is not None:
                    self.on_change()
        except Exception as exc:
            self.error = exc
        finally:
            self._ended = True
            if self.on_change is not None:
                self.on_change()

    def _on_local_change(self, event: TransactionEvent) -> None:
        if self._applying or event.update == EMPTY_UPDATE:
            return
        self._last_write = self.connection.write_message(
            create_update_message(event.update), binary=True
        )

    async def flushed(self) -> None:
        """Wait until the local changes sent so far have been handed to the socket."""
        if self._last_write is not None:
            await self._last_write

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._ended

    async def close(self) -> None:
        """Close the connection and wait for the reader to stop."""
        self.doc.unobserve(self._subscription)
        self.connection.close()
        try:
            await asyncio.wait_for(self._reader, 10)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._reader.cancel()
