"""The Jupyter server's handlers for rooms: a websocket per client, and a listing.

They only authenticate, authorize and hand over to
[FileRooms][jupyter_rooms.jupyter.filerooms.FileRooms], where the logic lives.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.auth.identity import User
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.websocket import WebSocketHandler

from ..websocket import HandlerChannel
from .filerooms import FileRooms, RoomPathError
from .kernelenv import is_kernel_token

__all__ = ["KERNEL_TOKEN_KEY", "SETTINGS_KEY", "RoomSocketHandler", "RoomsHandler"]

# Where the handlers find the server's rooms in the web application's settings.
SETTINGS_KEY = "jupyter_rooms_file_rooms"
# Where they find the credential that kernels of this server use for rooms.
KERNEL_TOKEN_KEY = "jupyter_rooms_kernel_token"

AUTH_RESOURCE = "contents"


class RoomSocketHandler(WebSocketMixin, WebSocketHandler, JupyterHandler):
    """``{base_url}api/rooms/{path}``: one client's y-websocket connection to a room.

    Joining needs permission to read contents; a client without permission to write
    them receives the document but its changes are refused.
    """

    auth_resource = AUTH_RESOURCE
    room_id = ""
    read_only = True
    channel: HandlerChannel | None = None

    @property
    def rooms(self) -> FileRooms:
        """The server's rooms."""
        rooms: FileRooms = self.settings[SETTINGS_KEY]
        return rooms

    @property
    def max_message_size(self) -> int:
        """The largest message a client may send; a larger one closes its connection."""
        return int(self.settings.get("jupyter_rooms_max_message_size", 64 * 1024 * 1024))

    def set_default_headers(self) -> None:
        """Leave out the API headers, which mean nothing for a websocket."""

    def get_compression_options(self) -> dict[str, Any] | None:
        """Compress as the server's settings say."""
        options: dict[str, Any] | None = self.settings.get("websocket_compression_options")
        return options

    kernel = False

    def _given_token(self) -> str:
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("token", "bearer") and value:
            return value.strip()
        return self.get_query_argument("token", "")

    async def prepare(self, *args: Any, **kwargs: Any) -> None:
        """Let kernels in with the rooms credential; everyone else as the server says."""
        token = self.settings.get(KERNEL_TOKEN_KEY, "")
        if token and is_kernel_token(self._given_token(), token):
            if not self.check_host():
                raise web.HTTPError(403)
            # The credential opens rooms and nothing else; it stands for the user the
            # server runs as, whose kernels alone are given it.
            self.kernel = True
            self.current_user = self._jupyter_current_user = User(
                username="jupyter-rooms-kernel", name="Kernel", display_name="Kernel"
            )
            return
        await super().prepare(*args, **kwargs)

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Authorize the user and find the room, then upgrade to a websocket."""
        await self._authorize()
        try:
            await self.rooms.start()
        except RuntimeError as exc:
            raise web.HTTPError(503, str(exc)) from None
        await self._locate(args[0] if args else "")
        await super().get(*args, **kwargs)

    async def _authorize(self) -> None:
        """Let the user in to read, or refuse; decide whether they may also write."""
        if self.kernel:
            self.read_only = False
            return
        user = self.current_user
        authorizer = self.authorizer
        if not await ensure_async(authorizer.is_authorized(self, user, "read", AUTH_RESOURCE)):
            raise web.HTTPError(403, "not allowed to read contents")
        can_write = await ensure_async(authorizer.is_authorized(self, user, "write", AUTH_RESOURCE))
        self.read_only = not can_write

    async def _locate(self, path: str) -> None:
        """Find the room the client asked for (before anything is opened or created)."""
        try:
            self.room_id = await self.rooms.resolve(path)
        except RoomPathError as exc:
            raise web.HTTPError(exc.status, exc.message) from None

    def _channel(self) -> HandlerChannel:
        return HandlerChannel(self, self.room_id)

    def _serve(self, channel: HandlerChannel) -> None:
        self.rooms.serve(self.room_id, channel, read_only=self.read_only)

    def open(self, *args: Any, **kwargs: Any) -> None:
        """Hand the new connection to its room."""
        super().open(*args, **kwargs)
        self.set_nodelay(True)
        self.channel = self._channel()
        try:
            self._serve(self.channel)
        except RuntimeError:
            self.close(1001, "server stopping")

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        """Pass a message on to the room (without a task for each: not a coroutine)."""
        return self.channel.feed(message) if self.channel is not None else None

    def on_close(self) -> None:
        """Tell the room the client left."""
        if self.channel is not None:
            self.channel.closed(self.close_code, self.close_reason)


class RoomsHandler(APIHandler):
    """``GET {base_url}api/rooms``: the open rooms."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """List the open rooms: id, clients, unsaved, last save, epoch, kind, saver, saves."""
        rooms: FileRooms = self.settings[SETTINGS_KEY]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"rooms": rooms.info()}))
