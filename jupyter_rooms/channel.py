"""Channels: the two-way message streams between a room and one client."""

from __future__ import annotations

import math
import sys
from typing import Protocol, runtime_checkable

from anyio import (
    BrokenResourceError,
    ClosedResourceError,
    EndOfStream,
    WouldBlock,
    create_memory_object_stream,
)
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

__all__ = ["Channel", "ChannelClosed", "ChannelIterator", "MemoryChannel", "memory_channel_pair"]


class ChannelClosed(Exception):
    """The channel was closed, by this side or the other."""


@runtime_checkable
class Channel(Protocol):
    """A transport that carries binary messages between a room and one client.

    Received messages are read with ``await channel.recv()`` or ``async for message in
    channel``; iteration ends when the channel closes. This is the protocol of
    ``pycrdt.Channel`` plus ``close``, which lets a server drop a client with a reason.

    A channel may also offer ``send_nowait(message) -> bool``: send at once if that
    needs no waiting, else return ``False``. Rooms use it, when present, to write to
    clients that keep up without a task switch per message; it must keep the order of
    messages with ``send``. And ``recv_nowait() -> bytes | None``: a message already
    received, or ``None``; rooms use it to apply a client's backlog of updates as one.
    """

    @property
    def path(self) -> str:
        """The room the channel leads to (for a server: what the client asked for)."""
        ...

    def __aiter__(self) -> Channel: ...

    async def __anext__(self) -> bytes: ...

    async def send(self, message: bytes) -> None:
        """Send one message.

        Args:
            message: The message.

        Raises:
            ChannelClosed: The channel is closed.
        """
        ...

    async def recv(self) -> bytes:
        """Receive one message.

        Returns:
            The message.

        Raises:
            ChannelClosed: The channel is closed and nothing is left to read.
        """
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the channel; the other side sees the end of its messages.

        Args:
            code: A websocket close code, for wires that carry one.
            reason: Why, for the other side's logs.
        """
        ...


class ChannelIterator:
    """Gives a channel with ``recv`` the ``async for`` of the protocol: iteration ends
    when ``recv`` says the channel closed."""

    async def recv(self) -> bytes:
        raise NotImplementedError

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ChannelClosed:
            raise StopAsyncIteration from None


class _CloseState:
    __slots__ = ("code", "reason")

    def __init__(self) -> None:
        self.code: int | None = None
        self.reason = ""


class MemoryChannel(ChannelIterator):
    """One end of an in-process channel. Create a connected pair with
    [memory_channel_pair][jupyter_rooms.channel.memory_channel_pair]."""

    def __init__(
        self,
        path: str,
        send_stream: MemoryObjectSendStream[bytes],
        receive_stream: MemoryObjectReceiveStream[bytes],
        close_state: _CloseState | None = None,
    ) -> None:
        self._path = path
        self._send_stream = send_stream
        self._receive_stream = receive_stream
        self._close_state = close_state or _CloseState()

    @property
    def close_code(self) -> int | None:
        """The code given by whichever end closed first, or ``None`` while open."""
        return self._close_state.code

    @property
    def close_reason(self) -> str:
        """The reason given by whichever end closed first."""
        return self._close_state.reason

    @property
    def path(self) -> str:
        return self._path

    async def send(self, message: bytes) -> None:
        try:
            await self._send_stream.send(message)
        except (BrokenResourceError, ClosedResourceError):
            raise ChannelClosed(self._path) from None

    def recv_nowait(self) -> bytes | None:
        """A message already received, or ``None`` when none is waiting."""
        try:
            return self._receive_stream.receive_nowait()
        except (WouldBlock, EndOfStream, ClosedResourceError, BrokenResourceError):
            return None

    async def recv(self) -> bytes:
        try:
            return await self._receive_stream.receive()
        except (EndOfStream, ClosedResourceError, BrokenResourceError):
            raise ChannelClosed(self._path) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._close_state.code is None:
            self._close_state.code = code
            self._close_state.reason = reason
        self._send_stream.close()
        self._receive_stream.close()


def memory_channel_pair(
    path: str, max_buffer_size: float = math.inf
) -> tuple[MemoryChannel, MemoryChannel]:
    """Create two connected in-process channels.

    Args:
        path: The room both ends lead to.
        max_buffer_size: How many messages each direction holds before ``send`` waits.

    Returns:
        The two ends: what one sends, the other receives.
    """
    a_send, b_receive = create_memory_object_stream[bytes](max_buffer_size)
    b_send, a_receive = create_memory_object_stream[bytes](max_buffer_size)
    state = _CloseState()
    return MemoryChannel(path, a_send, a_receive, state), MemoryChannel(
        path, b_send, b_receive, state
    )
