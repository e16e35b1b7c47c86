"""The jupyter wire: rooms bound to files, served by a Jupyter server.

``bind("jupyter", root_dir=..., port=...)`` runs a Jupyter server with the rooms
extension inside the current process; ``connect("jupyter", id="path/in/root", url=...,
token=...)`` joins the room of a file on any Jupyter server that has the extension.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from anyio import CancelScope
from jupyter_server.serverapp import ServerApp
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from traitlets import TraitError
from traitlets.config import Config

from ..room import Room, RoomManager
from ..websocket import WebsocketChannelClient
from ..wire import ServerWire
from .extension import RoomsApp, check_option
from .filerooms import FileRoom, FileRooms
from .kernelenv import ENV_TOKEN, ENV_URL, notebook_room_id, server_from_env

__all__ = ["JupyterClient", "JupyterServer", "MissingServerError"]

log = logging.getLogger("jupyter_rooms.jupyter")

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


class MissingServerError(ValueError):
    """``connect("jupyter")`` was not told which server to join."""


class _EmbeddedServerApp(ServerApp):
    """A Jupyter server that lives inside someone else's process and event loop."""

    def init_signal(self) -> None:
        """Leave the process's signal handlers alone."""


class JupyterServer(ServerWire):
    """A Jupyter server with the rooms extension, in this process: ``bind("jupyter", ...)``.

    Rooms are at ``{server.url}api/rooms/{path}``, each bound to the file at ``path``
    under ``root_dir``.

    Args:
        room_factory: ``Room`` (file-bound rooms, the default) or a subclass of
            [FileRoom][jupyter_rooms.jupyter.filerooms.FileRoom].
        root_dir: The directory whose files the rooms are bound to.
        host: The address to listen on.
        port: The port to listen on; ``0`` picks a free one (read ``server.port``).
        token: The token clients must give; a random one by default (read
            ``server.token``); ``""`` lets anyone in.
        base_url: The server's base URL path.
        cleanup_delay: Seconds a room stays open after its last client left.
        server_config: More Jupyter configuration, by class
            (``{"ServerApp": {"allow_origin": "https://example.org"}}``).
        options: Options of the extension (``save_delay``, ``poll_interval``,
            ``log_dir``, ``max_message_size``...), see the README's configuration table.
    """

    def __init__(
        self,
        room_factory: Callable[[str], Room] = Room,
        *,
        root_dir: str | os.PathLike[str] = ".",
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        base_url: str = "/",
        cleanup_delay: float = 60.0,
        server_config: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(room_factory, cleanup_delay=cleanup_delay)
        if room_factory is not Room and not (
            isinstance(room_factory, type) and issubclass(room_factory, FileRoom)
        ):
            raise TypeError(
                "the jupyter wire's rooms are bound to files: give room_factory=Room or a "
                "subclass of jupyter_rooms.jupyter.filerooms.FileRoom"
            )
        known = set(RoomsApp.class_own_traits(config=True))
        unknown = set(options) - known
        if unknown:
            raise TypeError(
                f"unknown options for the jupyter wire: {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        # Checked now: a Jupyter server would only log a bad value, and use the defaults.
        try:
            cleanup_delay = check_option("cleanup_delay", cleanup_delay)
            options = {name: check_option(name, value) for name, value in options.items()}
        except TraitError as exc:
            raise ValueError(f"bad option for the jupyter wire: {exc}") from None
        if options.get("redis_url"):
            # Say what to install now, rather than as a warning of the server's log.
            from ..redis import _import_redis

            _import_redis()
        if not os.path.isdir(root_dir):
            raise NotADirectoryError(f"root_dir {os.fspath(root_dir)!r} is not a directory")
        self.root_dir = os.path.abspath(root_dir)
        self.host = host
        self._port = port
        self.token = secrets.token_hex(16) if token is None else token
        self.base_url = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
        self._room_class = room_factory if room_factory is not Room else FileRoom
        self._cleanup_delay = cleanup_delay
        self._options = options
        self._server_config = server_config or {}
        self._rooms: FileRooms | None = None

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self._port

    @property
    def url(self) -> str:
        """The server's URL, base URL included (``http://host:port/base/``)."""
        return f"http://{self.host}:{self._port}{self.base_url}"

    @property
    def room_manager(self) -> RoomManager:
        """The server's rooms (while it runs)."""
        if self._rooms is None:
            raise RuntimeError("the server is not running: use 'async with bind(...)'")
        return self._rooms.manager

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[ServerWire]:
        async with self._serving():
            yield self

    def _config(self) -> Config:
        config = Config(self._server_config)
        config.ServerApp.root_dir = self.root_dir
        config.ServerApp.ip = self.host
        config.ServerApp.base_url = self.base_url
        config.ServerApp.open_browser = False
        # File ids (for JupyterLab's collaborative front end) come from jupyter_server_fileid.
        config.ServerApp.jpserver_extensions = {
            "jupyter_rooms": True,
            "jupyter_server_fileid": True,
        }
        config.IdentityProvider.token = self.token
        config.RoomsApp.cleanup_delay = self._cleanup_delay
        config.RoomsApp.room_class = self._room_class
        for name, value in self._options.items():
            setattr(config.RoomsApp, name, value)
        return config

    @asynccontextmanager
    async def _serving(self) -> AsyncIterator[None]:
        app = _EmbeddedServerApp(config=self._config())
        app.initialize(argv=[], find_extensions=False, new_httpserver=False)
        sockets = bind_sockets(self._port, self.host)
        self._port = sockets[0].getsockname()[1]
        app.port = self._port
        http_server = HTTPServer(
            app.web_app,
            xheaders=app.trust_xheaders,
            max_body_size=app.max_body_size,
            max_buffer_size=app.max_buffer_size,
        )
        http_server.add_sockets(sockets)
        extension = next(
            ext
            for ext in app.extension_manager.extension_apps.get("jupyter_rooms", ())
            if isinstance(ext, RoomsApp)
        )
        self._rooms = extension.file_rooms
        try:
            await app.extension_manager.start_all_extensions()
            log.info("jupyter server with rooms listening on %s", self.url)
            yield
        finally:
            with CancelScope(shield=True):
                http_server.stop()
                await app.cleanup_extensions()
                await app.cleanup_kernels()
                await http_server.close_all_connections()
                self._rooms = None


def _websocket_url(url: str, id: str) -> str:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"{url!r} is not an http(s) or ws(s) URL")
    path = parts.path.rstrip("/") + "/api/rooms/" + quote(id.lstrip("/"), safe="/")
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class JupyterClient(WebsocketChannelClient):
    """A client of a room on a Jupyter server: ``connect("jupyter", id=...)``.

    In a kernel started by a Jupyter server with the rooms extension, nothing else is
    needed: the server told the kernel where it is and gave it a credential for rooms
    (see [kernelenv][jupyter_rooms.jupyter.kernelenv]); with no ``id``, the room is the
    kernel's own notebook. Elsewhere, give ``url`` and ``token`` (or set
    ``JUPYTER_ROOMS_URL`` and ``JUPYTER_ROOMS_TOKEN``).

    Args:
        id: The file's path relative to the server's root; by default, in a kernel, the
            notebook the kernel belongs to.
        url: The server's URL, base URL included (``http://127.0.0.1:8888/``).
        token: The server's token (or the rooms credential), sent in the
            ``Authorization`` header.
        headers: More HTTP headers for the websocket request.
        max_message_size: The largest message accepted from the server, in bytes.
        kwargs: The options of [ChannelClient][jupyter_rooms.client.ChannelClient].

    Raises:
        MissingServerError: Neither ``url`` nor ``token`` was given.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        **kwargs: Any,
    ) -> None:
        if not kwargs.get("id", "").strip("/"):
            notebook = notebook_room_id()
            if notebook is None:
                session = os.environ.get("JPY_SESSION_NAME")
                why = (
                    f"this kernel's session, {session!r}, is no file under the server's "
                    "root: a console, or a notebook renamed since the kernel started"
                    if session
                    else "only in a notebook's kernel does it default to that notebook"
                )
                raise ValueError(
                    f"connect('jupyter') needs id=: the file's path under the server's root ({why})"
                )
            kwargs["id"] = notebook
        super().__init__(**kwargs)
        env_url, env_token = server_from_env()
        if url is None:
            url, token = env_url, token if token is not None else env_token
        elif token is None and url == env_url:
            token = env_token
        if url is None:
            raise MissingServerError(
                "connect('jupyter') needs the server: give url= (for example "
                "'http://127.0.0.1:8888/') and token= (the server's token), or set "
                f"{ENV_URL} and {ENV_TOKEN}; in a kernel started by a Jupyter server "
                "with jupyter_rooms installed they are set already"
            )
        self.url = _websocket_url(url, self.id)
        self.headers = dict(headers or {})
        self._has_token = bool(token)
        if token:
            self.headers["Authorization"] = f"token {token}"
        self.max_message_size = max_message_size

    def _refused_hint(self) -> str:
        if self._has_token:
            return (
                "the token is not this server's: give token= the server's token (or "
                f"the rooms credential, {ENV_TOKEN} in its kernels)"
            )
        return f"no token was given: give token= the server's token, or set {ENV_TOKEN}"
