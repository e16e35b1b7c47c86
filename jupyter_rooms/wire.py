"""Wires: the pluggable transports behind ``bind`` and ``connect``."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from typing import Any

from anyio import AsyncContextManagerMixin, Event
from pycrdt import Awareness, Doc

from .room import Room, RoomManager

__all__ = ["ClientWire", "ServerWire", "UnknownWireError", "bind", "connect"]

ENTRY_POINT_GROUP = "jupyter_rooms.wires"

# Where the wires that do not ship with jupyter_rooms come from, for error messages.
_PROVIDERS = {
    "redis": "jupyter_rooms[redis]",
}


class UnknownWireError(LookupError):
    """No installed package provides the wire that was asked for."""


class Flag:
    """An event that can be cleared again: set while a condition holds.

    ``await flag.wait()`` returns at once while the flag is set, and otherwise waits
    until it is set.
    """

    def __init__(self) -> None:
        self._event = Event()

    def is_set(self) -> bool:
        """Whether the flag is set now."""
        return self._event.is_set()

    def set(self) -> None:
        """Set the flag, waking every waiter."""
        self._event.set()

    def clear(self) -> None:
        """Clear the flag; later waiters wait for the next ``set``."""
        if self._event.is_set():
            self._event = Event()

    async def wait(self) -> None:
        """Wait until the flag is set."""
        await self._event.wait()

    def __bool__(self) -> bool:
        return self.is_set()

    def __repr__(self) -> str:
        return f"<Flag {'set' if self.is_set() else 'clear'}>"


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
        self.synchronized = Flag()
        self.awareness = Awareness(self._doc)

    @property
    def id(self) -> str:
        """The room this client joins."""
        return self._id

    @property
    def doc(self) -> Doc:
        """The client's copy of the shared document."""
        return self._doc

    async def push(self) -> None:
        """Send the local changes made since the last push (with ``auto_push=False``)."""
        raise NotImplementedError(f"{type(self).__name__} does not push by hand")

    async def pull(self) -> None:
        """Apply the remote changes received since the last pull (with ``auto_pull=False``)."""
        raise NotImplementedError(f"{type(self).__name__} does not pull by hand")

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[ClientWire]:
        yield self

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
