"""The websocket wire: a standalone y-websocket server and client.

The server speaks the protocol of Yjs's reference server, so any Yjs client (a browser
running ``y-websocket``'s ``WebsocketProvider``, for one) can join its rooms; the client
can join any y-websocket server. A room's id is the URL path after the first ``/``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, unquote

from anyio import CancelScope, get_cancelled_exc_class
from anyio.abc import TaskGroup
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application
from tornado.websocket import WebSocketHandler

from .._tasks import task_group
from ..channel import Channel
from ..room import Room
from ..websocket import HandlerChannel, WebsocketChannelClient
from ..wire import ServerWire

__all__ = ["WebsocketClient", "WebsocketServer"]

log = logging.getLogger("jupyter_rooms.websocket")

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


class _RoomSocket(WebSocketHandler):
    """One client's connection to a room of a standalone server."""

    server: WebsocketServer
    channel: HandlerChannel | None = None

    def initialize(self, server: WebsocketServer) -> None:
        self.server = server

    def check_origin(self, origin: str) -> bool:
        return self.server.allow_origin(origin)

    def open(self, *args: str, **kwargs: str) -> None:
        # As in Yjs's reference server: the room is the path after its first "/".
        path = unquote(self.request.path[1:])
        self.channel = HandlerChannel(self, path)
        self.set_nodelay(True)
        self.server.start_serving(path, self.channel)

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        # Not a coroutine: tornado would start a task for each message.
        return self.channel.feed(message) if self.channel is not None else None

    def on_close(self) -> None:
        if self.channel is not None:
            self.channel.closed(self.close_code, self.close_reason)


class WebsocketServer(ServerWire):
    """A standalone y-websocket server: ``bind("websocket", host=..., port=...)``.

    Args:
        room_factory: Builds the server's rooms from their ids.
        host: The address to listen on.
        port: The port to listen on; ``0`` picks a free one (read it from ``server.port``).
        cleanup_delay: Seconds a room stays open after its last client left.
        max_message_size: The largest message accepted, in bytes; a client that sends a
            larger one is disconnected.
        allowed_origins: Browser origins allowed to connect (``"*"`` for any); requests
            without an ``Origin`` header (non-browser clients) are always allowed.
        redis_url: Share every room with the other servers that use this Redis (see
            [jupyter_rooms.redis][]); needs ``pip install jupyter_rooms[redis]``.
        redis_prefix: Put before every Redis key, so that deployments can share a Redis.
    """

    def __init__(
        self,
        room_factory: Callable[[str], Room] = Room,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cleanup_delay: float = 0.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        allowed_origins: tuple[str, ...] | list[str] | str = (),
        redis_url: str | None = None,
        redis_prefix: str | None = None,
    ) -> None:
        if redis_url:
            from ..redis import DEFAULT_PREFIX, redis_room_factory

            room_factory = redis_room_factory(
                redis_url, room_factory, prefix=redis_prefix or DEFAULT_PREFIX
            )
        super().__init__(room_factory, cleanup_delay=cleanup_delay)
        self.host = host
        self._port = port
        self.max_message_size = max_message_size
        self.allowed_origins = (
            {allowed_origins} if isinstance(allowed_origins, str) else set(allowed_origins)
        )
        self._task_group: TaskGroup | None = None
        self._http_server: HTTPServer | None = None

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self._port

    def allow_origin(self, origin: str) -> bool:
        """Whether a browser from ``origin`` may connect."""
        return "*" in self.allowed_origins or origin in self.allowed_origins

    @asynccontextmanager
    async def _serving(self) -> AsyncIterator[None]:
        app = Application(
            [(r"/.*", _RoomSocket, {"server": self})],
            websocket_max_message_size=self.max_message_size,
        )
        sockets = bind_sockets(self._port, self.host)
        self._port = sockets[0].getsockname()[1]
        http_server = HTTPServer(app, max_buffer_size=self.max_message_size + 1024)
        http_server.add_sockets(sockets)
        log.info("websocket server listening on ws://%s:%s", self.host, self._port)
        try:
            async with task_group() as tg:
                self._task_group = tg
                try:
                    yield
                finally:
                    self._task_group = None
                    http_server.stop()
                    tg.cancel_scope.cancel()
        finally:
            with CancelScope(shield=True):
                await http_server.close_all_connections()

    def start_serving(self, path: str, channel: HandlerChannel) -> None:
        """Serve a newly opened socket in the room it asked for."""
        if self._task_group is None:
            channel._handler.close(1001, "server stopping")
            return
        self._task_group.start_soon(self._serve_one, path, channel)

    async def _serve_one(self, path: str, channel: Channel) -> None:
        try:
            await self.room_manager.serve(path, channel)
        except get_cancelled_exc_class():
            raise
        except Exception as exc:
            log.exception("room %r failed", path)
            await channel.close(1011, f"server error: {exc}")


class WebsocketClient(WebsocketChannelClient):
    """A client of any y-websocket server: ``connect("websocket", id=..., host=..., port=...)``.

    Args:
        id: The room to join; it becomes the URL path.
        host: The server's host.
        port: The server's port.
        url: The server's base URL (``ws://`` or ``wss://``), instead of host and port.
        headers: HTTP headers for the websocket request (for example an authorization).
        max_message_size: The largest message accepted from the server, in bytes.
        kwargs: The options of [ChannelClient][jupyter_rooms.client.ChannelClient].
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1234,
        url: str | None = None,
        headers: dict[str, str] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        base = url if url is not None else f"ws://{host}:{port}"
        self.url = f"{base.rstrip('/')}/{quote(self.id)}"
        self.headers = headers or {}
        self.max_message_size = max_message_size
