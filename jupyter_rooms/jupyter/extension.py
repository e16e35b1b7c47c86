"""The Jupyter server extension: rooms bound to the server's files at ``api/rooms/{path}``."""

from __future__ import annotations

import math
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Int, TraitError, Type, Unicode, default, validate

from .collaboration import collaboration_handlers
from .filerooms import DEFAULT_COMPACT_SIZE, FileRoom, FileRooms
from .forks import FORK_EVENT_SCHEMA, FORK_EVENTS
from .handlers import KERNEL_TOKEN_KEY, SETTINGS_KEY, RoomsHandler, RoomSocketHandler
from .kernelenv import kernel_token, publish, unpublish

__all__ = ["REDIS_URL_ENV", "RoomsApp", "check_option"]

# The environment variable that shares the rooms through Redis when no setting does.
REDIS_URL_ENV = "JUPYTER_ROOMS_REDIS_URL"

# The least value of each numeric option, and its unit: below it (or NaN) rooms would
# save at no sensible time, close every client at once, or never wait.
_MINIMUM: dict[str, tuple[float, str]] = {
    "save_delay": (0, "seconds"),
    "cleanup_delay": (0, "seconds"),
    "poll_interval": (0, "seconds"),
    "shutdown_timeout": (0, "seconds"),
    "max_message_size": (1, "bytes"),
    "max_backlog": (1, "messages"),
    "compact_size": (0, "bytes"),
    "redis_lock_ttl": (0, "seconds"),
}
# Options that must be more than their minimum, not equal to it.
_ABOVE_MINIMUM = {"redis_lock_ttl"}


def check_option(name: str, value: Any) -> Any:
    """Check the value of one of the extension's options as its configuration would.

    Args:
        name: The option (a configurable trait of ``RoomsApp``).
        value: Its value.

    Returns:
        The value, as the option holds it (an ``int`` given for a float becomes a float).

    Raises:
        TraitError: The value has the wrong type or is out of range.
    """
    trait = RoomsApp.class_traits(config=True).get(name)
    if trait is None:
        raise TraitError(f"RoomsApp has no option {name!r}")
    value = trait.validate(None, value)  # type: ignore[attr-defined]
    return _in_range(name, value)


def _in_range(name: str, value: Any) -> Any:
    if name not in _MINIMUM:
        return value
    least, unit = _MINIMUM[name]
    if name in _ABOVE_MINIMUM:
        if not value > least:
            raise TraitError(f"RoomsApp.{name} must be more than {least} {unit}, not {value!r}")
    elif math.isnan(value) or value < least:
        raise TraitError(f"RoomsApp.{name} must be {least} {unit} or more, not {value!r}")
    return value


class RoomsApp(ExtensionApp):
    """Serves live, shared documents bound to the server's files.

    A client joins the room of a file at ``{base_url}api/rooms/{path}`` (the y-websocket
    protocol); ``{base_url}api/rooms`` lists the open rooms.
    """

    name = "jupyter_rooms"
    description = "Live, shared CRDT documents bound to the server's files."
    load_other_extensions = True

    save_delay = Float(
        1.0,
        config=True,
        help="Seconds after the last change before a room saves its file; during "
        "continuous editing a room still saves every ten such delays. A room also saves "
        "when its last client leaves and when the server stops.",
    )
    cleanup_delay = Float(
        60.0,
        config=True,
        help="Seconds a room stays open after its last client left, so that a client "
        "that reconnects finds it open.",
    )
    poll_interval = Float(
        1.0,
        config=True,
        help="Seconds between two looks at an open room's file for changes made by "
        "other programs, which are merged into the room. 0 looks only before saving.",
    )
    max_message_size = Int(
        64 * 1024 * 1024,
        config=True,
        help="The largest message, in bytes, a client may send; a client that sends a "
        "larger one is disconnected (close code 1009).",
    )
    max_backlog = Int(
        1024,
        config=True,
        help="How many messages may wait for one client before it is disconnected as too "
        "slow (it reconnects and resyncs).",
    )
    log_dir = Unicode(
        config=True,
        help="Where rooms keep their update logs (their history). By default "
        "'rooms' under the Jupyter data directory (JUPYTER_DATA_DIR moves it); one "
        "sub-directory per server root.",
    )
    compact_size = Int(
        DEFAULT_COMPACT_SIZE,
        config=True,
        help="Size in bytes above which a room's log may be compacted into one update "
        "(it is, once it is also four times larger than after its last compaction).",
    )
    shutdown_timeout = Float(
        10.0,
        config=True,
        help="Seconds a room may take to save its file when it closes.",
    )
    room_class = Type(
        FileRoom,
        klass=FileRoom,
        config=True,
        help="The class of the rooms: FileRoom or a subclass.",
    )

    collaboration = Bool(
        True,
        config=True,
        help="Serve the API of JupyterLab's collaborative front end (api/collaboration/..., "
        "as jupyter-docprovider and jupyter-collaboration-ui speak it) on the rooms, so that "
        "JupyterLab's editors and kernels share one room per file. When jupyter_server_ydoc "
        "(jupyter-collaboration's server) is enabled too, these endpoints take its place; "
        "set this to False to leave them to it (its rooms are then separate from these).",
    )

    redis_url = Unicode(
        config=True,
        help="Share every room with the other servers that use this Redis, so that "
        "clients of different servers (replicas, the servers of a JupyterHub on shared "
        "storage) edit the same rooms, and one server at a time saves each file. "
        "redis://[:password@]host:port/db, or rediss:// for TLS. Empty: rooms are this "
        "server's own. By default the JUPYTER_ROOMS_REDIS_URL environment variable. "
        "Needs pip install 'jupyter_rooms[redis]'.",
    )
    redis_prefix = Unicode(
        "jupyter_rooms:",
        config=True,
        help="Put before every Redis key, so that several deployments can share one Redis: "
        "servers share rooms only with servers that use the same prefix.",
    )
    redis_lock_ttl = Float(
        10.0,
        config=True,
        help="Seconds after which the server that saves a room shared through Redis loses "
        "that role if it stops renewing it (it died or lost Redis); another server then "
        "takes over. It is renewed every third of this.",
    )

    @default("redis_url")
    def _default_redis_url(self) -> str:
        return os.environ.get(REDIS_URL_ENV, "")

    @validate(*_MINIMUM)
    def _validate_minimum(self, proposal: Any) -> Any:
        return _in_range(proposal["trait"].name, proposal["value"])

    @default("log_dir")
    def _default_log_dir(self) -> str:
        return os.path.join(jupyter_data_dir(), "rooms")

    file_rooms: FileRooms
    # What this server told its kernels, and what that replaced in the environment.
    _published: tuple[str, dict[str, str | None]] | None = None

    def initialize_settings(self) -> None:
        """Create the server's rooms and put them where the handlers find them."""
        assert self.serverapp is not None
        if self.collaboration:
            # jupyter_server_fileid, set up after this extension, keeps the file ids the
            # collaboration API gives in a database there, and cannot create the directory.
            os.makedirs(jupyter_data_dir(), exist_ok=True)
        room_factory = None
        if self.redis_url:
            # Imported only now: a server that does not share its rooms never loads redis.
            from ..redis import redis_room_factory

            room_factory = redis_room_factory(
                self.redis_url,
                self.room_class,
                prefix=self.redis_prefix,
                lock_ttl=self.redis_lock_ttl,
            )
            self.log.info(
                "rooms: shared through Redis at %s (keys %s*)",
                _without_password(self.redis_url),
                self.redis_prefix,
            )
        self.file_rooms = FileRooms(
            self.serverapp.contents_manager,
            log_dir=self.log_dir,
            save_delay=self.save_delay,
            poll_interval=self.poll_interval,
            cleanup_delay=self.cleanup_delay,
            max_backlog=self.max_backlog,
            compact_size=self.compact_size,
            shutdown_timeout=self.shutdown_timeout,
            room_class=self.room_class,
            room_factory=room_factory,
            logger=self.log,
        )
        self.settings[SETTINGS_KEY] = self.file_rooms
        self.settings["jupyter_rooms_max_message_size"] = self.max_message_size
        # Accepted from the server's first request on: a kernel that outlived a restart
        # of the server reconnects at once, possibly before the extension's start hook
        # has run (and would be refused, for good, meanwhile).
        self.settings[KERNEL_TOKEN_KEY] = kernel_token()
        contents_manager = self.serverapp.contents_manager
        schema_id = getattr(contents_manager, "event_schema_id", None)
        if schema_id is not None and self.serverapp.event_logger is not None:
            self.serverapp.event_logger.add_listener(schema_id=schema_id, listener=self._on_event)

    def initialize_handlers(self) -> None:
        """Route ``api/rooms``, ``api/rooms/{path}`` and, unless switched off, JupyterLab's
        ``api/collaboration/...``."""
        self.handlers.extend(
            [
                (r"/api/rooms/?", RoomsHandler),
                (r"/api/rooms/(.*)", RoomSocketHandler),
            ]
        )
        assert self.serverapp is not None
        ydoc = self._ydoc_enabled()
        if not self.collaboration:
            if ydoc:
                self.log.warning(
                    "rooms: api/collaboration is left to jupyter_server_ydoc "
                    "(RoomsApp.collaboration=False): JupyterLab's editors and kernels "
                    "edit separate copies of a file"
                )
            return
        # jupyter-collaboration's server part sets these when it is installed; without
        # it the front end's defaults are the same: collaborative, kernels over websockets.
        page_config = self.serverapp.web_app.settings.setdefault("page_config_data", {})
        page_config.setdefault("disableRTC", False)
        page_config.setdefault("serverSideExecution", False)
        # Extensions set up their routes in the order of their names, and the first route
        # that matches wins: ours come before jupyter_server_ydoc's.
        self.handlers.extend(collaboration_handlers())
        events = self.serverapp.event_logger
        if not ydoc and events is not None and FORK_EVENTS not in events.schemas.schema_ids:
            # JupyterLab's fork manager hears of forks through the event stream. When
            # jupyter_server_ydoc is enabled it registers the same schema after this (a
            # second registration would fail it), and forks are told under its own.
            events.register_event_schema(FORK_EVENT_SCHEMA)
        if ydoc:
            self.log.warning(
                "rooms: jupyter_server_ydoc is enabled too; jupyter_rooms serves "
                "api/collaboration (one room per file for JupyterLab and kernels). "
                "Set RoomsApp.collaboration=False to leave it to jupyter_server_ydoc."
            )
        else:
            self.log.info("rooms: JupyterLab's collaborative editors use rooms (api/collaboration)")

    def _ydoc_enabled(self) -> bool:
        assert self.serverapp is not None
        extensions = getattr(self.serverapp, "jpserver_extensions", {}) or {}
        return bool(extensions.get("jupyter_server_ydoc"))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Start serving rooms, and tell the kernels started from now on where they are."""
        await self.file_rooms.start()
        self._publish_to_kernels(serverapp)

    def _publish_to_kernels(self, serverapp: Any) -> None:
        url = serverapp.connection_url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            self.log.info("rooms: kernels cannot reach a server at %s by themselves", url)
            return
        if serverapp.ip in ("", "0.0.0.0", "::", "*"):
            # Kernels run beside the server: the loopback address always reaches it.
            url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{serverapp.port}"))
        token = serverapp.web_app.settings[KERNEL_TOKEN_KEY]
        self._published = (url, publish(url, os.path.abspath(serverapp.root_dir), token))
        self.log.info("rooms: kernels started by this server reach rooms at %sapi/rooms/", url)

    async def _on_event(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        # Renames and deletions through the contents API move or close rooms.
        await self.file_rooms.on_contents_event(data)

    async def stop_extension(self) -> None:
        """Save and close every room; kernels started from now on are not sent here."""
        try:
            await self.file_rooms.stop()
        finally:
            if self._published is not None:
                unpublish(*self._published)
                self._published = None


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
