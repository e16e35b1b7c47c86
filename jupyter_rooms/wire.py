"""Wires: the pluggable transports behind ``bind`` and ``connect``."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from importlib.metadata import entry_points
from typing import Any, TypeVar

from anyio import AsyncContextManagerMixin, Event
from anyio.from_thread import BlockingPortal, start_blocking_portal
from pycrdt import Awareness, Doc

from .room import Room, RoomManager

__all__ = ["ClientWire", "ServerWire", "UnknownWireError", "bind", "connect"]

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

T = TypeVar("T")

log = logging.getLogger("jupyter_rooms.client")

ENTRY_POINT_GROUP = "jupyter_rooms.wires"

# Where the wires that do not ship with jupyter_rooms come from, for error messages.
_PROVIDERS = {
    "redis": "jupyter_rooms[redis]",
}


class UnknownWireError(LookupError):
    """No installed package provides the wire that was asked for."""


def _in_blocking_context() -> bool:
    """Whether no event loop runs in this thread (so the client may be used blocking)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


class Flag:
    """An event that can be cleared again: set while a condition holds.

    ``await flag.wait()`` returns at once while the flag is set, and otherwise waits
    until it is set. A flag can be made and read outside of an event loop.
    """

    def __init__(self) -> None:
        self._is_set = False
        self._event: Event | None = None

    def is_set(self) -> bool:
        """Whether the flag is set now."""
        return self._is_set

    def set(self) -> None:
        """Set the flag, waking every waiter."""
        self._is_set = True
        if self._event is not None:
            self._event.set()

    def clear(self) -> None:
        """Clear the flag; later waiters wait for the next ``set``."""
        self._is_set = False
        if self._event is not None and self._event.is_set():
            self._event = None

    async def wait(self) -> None:
        """Wait until the flag is set."""
        if self._is_set:
            return
        if self._event is None:
            self._event = Event()
        await self._event.wait()

    def __bool__(self) -> bool:
        return self._is_set

    def __repr__(self) -> str:
        return f"<Flag {'set' if self._is_set else 'clear'}>"


class ClientStatus:
    """What a client reports to its status callbacks (see ``ClientWire.on_status``)."""

    CONNECTED = "connected"
    SYNCHRONIZED = "synchronized"
    DISCONNECTED = "disconnected"
    RESET = "reset"
    CLOSED = "closed"


class ServerWire(AsyncContextManagerMixin):
    """The base of every wire's server: it owns a room manager.

    Args:
        room_factory: Builds the server's rooms from their ids.
        cleanup_delay: Seconds a room stays open after its last client left.
    """

    def __init__(
        self, room_factory: Callable[[str], Room] = Room, *, cleanup_delay: float = 0.0
    ) -> None:
        self._room_manager = RoomManager(room_factory, cleanup_delay=cleanup_delay)

    @property
    def room_manager(self) -> RoomManager:
        """The server's rooms."""
        return self._room_manager

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[ServerWire]:
        async with self._room_manager, self._serving():
            yield self

    @asynccontextmanager
    async def _serving(self) -> AsyncIterator[None]:
        """Accept clients while the block runs; wires override this."""
        yield


class ClientWire(AsyncContextManagerMixin):
    """The base of every wire's client: a document kept in sync with a room.

    Args:
        id: The room to join.
        doc: The document to synchronize; a new one by default.
        auto_push: Send local changes as they happen; otherwise on ``push()``.
        auto_pull: Apply remote changes as they arrive; otherwise on ``pull()``.
    """

    def __init__(
        self,
        *,
        id: str = "",
        doc: Doc | None = None,
        auto_push: bool = True,
        auto_pull: bool = True,
    ) -> None:
        self._id = id
        self._doc = doc if doc is not None else Doc()
        self.auto_push = auto_push
        self.auto_pull = auto_pull
        if doc is None and _in_blocking_context():
            self._doc = Doc(allow_multithreading=True)
        self.synchronized = Flag()
        # Set once the client has left its room (its block ended, or it stopped): its
        # document no longer reaches the room, until it is entered again.
        self.closed = Flag()
        self.awareness = Awareness(self._doc)
        self._status_callbacks: list[Callable[[str, dict[str, Any]], None]] = []
        self._holder: asyncio.Task[None] | None = None
        self._stop: Event | None = None
        self._portal: BlockingPortal | None = None
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None

    @property
    def id(self) -> str:
        """The room this client joins."""
        return self._id

    @property
    def doc(self) -> Doc:
        """The client's copy of the shared document."""
        return self._doc

    def on_status(self, callback: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``callback(status, details)`` when the client's status changes.

        The statuses are those of [ClientStatus][jupyter_rooms.ClientStatus]: connected,
        synchronized, disconnected (with ``code`` and ``reason``), reset (the room
        started a new history and the document was replaced), closed (the client left
        the room). A wire reports those that apply to it: the file wire, say, is
        synchronized once it has read its file, and closed when its block ends.

        Args:
            callback: A function; it runs in the client's event loop and must not block.
        """
        self._status_callbacks.append(callback)

    def _notify(self, status: str, **details: Any) -> None:
        """Report a status to the callbacks (wires call this)."""
        if status == ClientStatus.CLOSED:
            self.closed.set()
        elif status in (ClientStatus.CONNECTED, ClientStatus.SYNCHRONIZED):
            self.closed.clear()
        for callback in list(self._status_callbacks):
            try:
                callback(status, details)
            except Exception:
                log.exception("room %r: a status callback failed", self._id)

    async def push(self) -> None:
        """Send the local changes made since the last push (with ``auto_push=False``)."""
        raise NotImplementedError(f"{type(self).__name__} does not push by hand")

    async def pull(self) -> None:
        """Apply the remote changes received since the last pull (with ``auto_pull=False``)."""
        raise NotImplementedError(f"{type(self).__name__} does not pull by hand")

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[ClientWire]:
        yield self

    async def start(self) -> Self:
        """Connect, and stay connected after this call returns, until ``stop()``.

        For code that cannot keep an ``async with`` block open, such as notebook cells:
        ``client = await connect(...).start()`` in one cell, ``await client.stop()`` in a
        later one. The client lives in a task of its own on the running event loop.

        Returns:
            The client, connected and synchronized.
        """
        if self._holder is not None:
            raise RuntimeError("this client is already started")
        ready = Event()
        stop = Event()
        errors: list[BaseException] = []

        async def hold() -> None:
            try:
                async with self:
                    ready.set()
                    await stop.wait()
            except BaseException as exc:
                errors.append(exc)
                if not ready.is_set():
                    ready.set()
                    return
                raise

        self._stop = stop
        self._holder = asyncio.get_running_loop().create_task(hold())
        await ready.wait()
        if errors:
            self._holder = None
            raise errors[0]
        return self

    async def stop(self) -> None:
        """Disconnect a client started with ``start()``, sending what is pending first."""
        holder, self._holder = self._holder, None
        if holder is None or self._stop is None:
            return
        self._stop.set()
        await holder

    def __enter__(self) -> Self:
        """Connect from code that is not async: ``with connect(...) as client``.

        The client runs on an event loop in a thread of its own; the document may be
        edited from the calling thread. Give it a ``Doc(allow_multithreading=True)`` if
        you pass your own document.
        """
        if not _in_blocking_context():
            # Blocking this thread would stall the event loop that runs here (a notebook
            # cell's, for one), and the document was made for that loop alone.
            raise RuntimeError(
                "'with connect(...)' is the blocking form, for code that runs no event "
                "loop; here one is running (in a notebook cell, for example): use "
                "'async with connect(...)', or 'await connect(...).start()' to stay "
                "connected across cells"
            )
        if not self._doc._allow_multithreading:
            raise ValueError(
                "the blocking form ('with connect(...)') shares the document between two "
                "threads: pass doc=Doc(allow_multithreading=True), or no doc"
            )
        portal_cm = start_blocking_portal()
        portal = portal_cm.__enter__()
        try:
            portal.call(self.start)
        except BaseException:
            portal_cm.__exit__(*sys.exc_info())
            raise
        self._portal_cm = portal_cm
        self._portal = portal
        return self

    def __exit__(self, *exc_info: object) -> None:
        portal, portal_cm = self._portal, self._portal_cm
        self._portal = self._portal_cm = None
        if portal is None or portal_cm is None:
            return
        try:
            portal.call(self.stop)
        finally:
            portal_cm.__exit__(None, None, None)

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a coroutine function of this client from the thread that entered
        ``with connect(...)``, for example ``client.call(client.push)``.

        Args:
            func: An async function (or method) to run on the client's event loop.
            args: Its positional arguments.

        Returns:
            What it returns.
        """
        if self._portal is None:
            raise RuntimeError("call() is for clients entered with 'with connect(...)'")
        return self._portal.call(func, *args)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """In a Jupyter kernel, show the client as a live widget of its room's document
        (see [RoomWidget][jupyter_rooms.widget.RoomWidget]); elsewhere, as its repr."""
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
        if getattr(shell, "kernel", None) is None:
            return None
        from .widget import widget_for

        return widget_for(self)._repr_mimebundle_(**kwargs)


def _load(wire: str, side: str) -> Any:
    name = f"{wire}_{side}"
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        available = sorted(
            ep.name.rsplit("_", 1)[0]
            for ep in entry_points(group=ENTRY_POINT_GROUP)
            if ep.name.endswith(f"_{side}")
        )
        package = _PROVIDERS.get(wire, f"a package that provides the {wire!r} wire")
        raise UnknownWireError(
            f"no {side} for wire {wire!r} is installed (install {package}); "
            f"installed wires with a {side}: {', '.join(available) or 'none'}"
        )
    return next(iter(found)).load()


def bind(wire: str, room_factory: Callable[[str], Room] = Room, **kwargs: Any) -> ServerWire:
    """Create a server that serves rooms over a wire.

    Use it as ``async with bind(wire, ...) as server``: the server accepts clients
    inside the block and stops, closing its rooms, when the block ends.

    Args:
        wire: The wire's name: ``"memory"``, ``"websocket"``, ``"jupyter"`` or one an
            installed package adds.
        room_factory: Builds rooms from their ids: ``Room`` or a subclass.
        kwargs: The wire's own options (for example ``host`` and ``port``).

    Returns:
        The server.

    Raises:
        UnknownWireError: No installed package provides a server for that wire.
    """
    server_class = _load(wire, "server")
    server: ServerWire = server_class(room_factory=room_factory, **kwargs)
    return server


def connect(wire: str, *, id: str = "", doc: Doc | None = None, **kwargs: Any) -> ClientWire:
    """Create a client that keeps a document in sync over a wire.

    Use it as ``async with connect(wire, id=..., ...) as client``: inside the block,
    ``client.doc`` is synchronized with the room (entering waits for the first sync);
    leaving the block sends what is pending and disconnects.

    Args:
        wire: The wire's name: ``"memory"``, ``"file"``, ``"websocket"``, ``"jupyter"``
            or one an installed package adds.
        id: The room to join.
        doc: A document to synchronize; a new empty one by default.
        kwargs: The wire's own options.

    Returns:
        The client.

    Raises:
        UnknownWireError: No installed package provides a client for that wire.
    """
    client_class = _load(wire, "client")
    client: ClientWire = client_class(id=id, doc=doc, **kwargs)
    return client
