"""The memory wire: a server and its clients in one process, for tests and embedding."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from anyio.abc import TaskGroup

from .._tasks import task_group
from ..channel import Channel, MemoryChannel, memory_channel_pair
from ..client import ChannelClient
from ..room import Room
from ..wire import ServerWire

__all__ = ["MemoryClient", "MemoryServer"]

log = logging.getLogger("jupyter_rooms.memory")

# How many messages each direction of a connection holds before its sender waits: what
# a room sends a client that stops reading then waits in the room's own bounded queue,
# and the client is dropped once that is full, as over a socket.
CHANNEL_BUFFER = 64


class MemoryServer(ServerWire):
    """An in-process server: ``bind("memory")``.

    Args:
        room_factory: Builds the server's rooms from their ids.
        cleanup_delay: Seconds a room stays open after its last client left.
    """

    def __init__(
        self, room_factory: Callable[[str], Room] = Room, *, cleanup_delay: float = 0.0
    ) -> None:
        super().__init__(room_factory, cleanup_delay=cleanup_delay)
        self._task_group: TaskGroup | None = None

    @asynccontextmanager
    async def _serving(self) -> AsyncIterator[None]:
        async with task_group() as tg:
            self._task_group = tg
            try:
                yield
            finally:
                self._task_group = None
                tg.cancel_scope.cancel()

    def accept(self, id: str) -> MemoryChannel:
        """Connect a new client to a room.

        Args:
            id: The room's id.

        Returns:
            The client's end of the channel; the server serves the other end.
        """
        if self._task_group is None:
            raise ConnectionRefusedError("the memory server is not running")
        client_end, server_end = memory_channel_pair(id, CHANNEL_BUFFER)
        self._task_group.start_soon(self._serve_one, id, server_end)
        return client_end

    async def _serve_one(self, id: str, channel: Channel) -> None:
        try:
            await self.room_manager.serve(id, channel)
        except Exception as exc:
            log.exception("room %r failed", id)
            await channel.close(1011, f"server error: {exc}")


class MemoryClient(ChannelClient):
    """A client of a memory server: ``connect("memory", id=..., server=server)``.

    Args:
        server: The server, as returned by ``bind("memory")``.
        kwargs: The options of [ChannelClient][jupyter_rooms.client.ChannelClient].
    """

    def __init__(self, *, server: MemoryServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._server = server

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[Channel]:
        channel = self._server.accept(self.id)
        try:
            yield channel
        finally:
            await channel.close()
