"""The client side of the protocol, shared by every wire that carries it over a channel."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
from abc import abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from anyio import (
    TASK_STATUS_IGNORED,
    EndOfStream,
    WouldBlock,
    create_memory_object_stream,
    create_task_group,
    move_on_after,
    sleep,
)
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pycrdt import Awareness, Doc, TransactionEvent

from ._tasks import task_group
from .channel import Channel, ChannelClosed
from .protocol import (
    EMPTY_UPDATE,
    MessageType,
    ProtocolError,
    SyncType,
    awareness_message,
    merged_update_message,
    parse_control,
    parse_message,
    sync_step1,
    sync_step2,
    sync_update,
    validate_awareness_update,
)
from .wire import ClientStatus, ClientWire, Flag

__all__ = ["ChannelClient", "ClientStatus", "FatalClose"]

log = logging.getLogger("jupyter_rooms.client")

_Item = tuple[bytes, "bytes | None"]

# Close codes after which reconnecting cannot help (the client is not allowed in, the
# room does not exist, the client sent something the server refuses).
_FATAL_CLOSE_CODES = {1002, 1003, 1008, 1009, 4400, 4403, 4404}


class FatalClose(ConnectionError):
    """The server closed the connection for a reason that reconnecting cannot fix."""


class ChannelClient(ClientWire):
    """A client that syncs its document with a room through a channel.

    Wires subclass it and provide ``_open``, which opens one channel to the room. This
    class does the sync handshake, sends local changes, applies remote ones, relays
    presence, and, when the connection drops, reconnects with backoff: the handshake
    after a reconnect exchanges whatever each side missed, so edits made while
    disconnected are not lost and nothing is applied twice.

    Args:
        id: The room to join.
        doc: The document to synchronize; a new one by default.
        auto_push: Send local changes as they happen; otherwise on ``push()``.
        auto_pull: Apply remote changes as they arrive; otherwise on ``pull()``.
        reconnect: Reconnect when the connection drops after it was first made.
        timeout: Seconds to wait for the first connection and sync when entering.
        max_backoff: The longest wait, in seconds, between two reconnection attempts.

    Attributes:
        presence_renewal: Seconds between two renewals of the local presence while
            connected, as y-protocols clients do every 15 s: the others drop a state not
            renewed within 30 s (a room does so for clients of another server, which
            can die without saying goodbye).
    """

    presence_renewal: float = 15.0

    def __init__(
        self,
        *,
        id: str = "",
        doc: Doc | None = None,
        auto_push: bool = True,
        auto_pull: bool = True,
        reconnect: bool = True,
        timeout: float = 30.0,
        max_backoff: float = 5.0,
    ) -> None:
        super().__init__(id=id, doc=doc, auto_push=auto_push, auto_pull=auto_pull)
        self.reconnect = reconnect
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.connected = Flag()
        self.close_code: int | None = None
        self.close_reason = ""
        self._outbox: MemoryObjectSendStream[_Item] | None = None
        self._in_flight = 0
        self._idle = Flag()
        self._idle.set()
        # Set when the client stops trying to connect (a close it cannot get past).
        self._ended = Flag()
        self._was_synchronized = False
        # Whether a connection was made since entering: a timeout then waited for the
        # first sync, not for a connection.
        self._was_connected = False
        # Clear while local changes exist that the server may not have: made while
        # disconnected, or queued on a connection that dropped before sending them.
        self._delivered = Flag()
        self._delivered.set()
        # Set once the client stops trying to connect (a final close, or reconnect=False).
        self._given_up = Flag()
        self._applying = False
        self._unpushed: list[bytes] = []
        self._unpulled: list[bytes] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        # The room's epoch, for servers that announce one: a history the room may
        # replace (a file whose history was lost), after which merging would duplicate.
        self.epoch: str | None = None
        # Sync step 1 messages sent in this session and not answered yet.
        self._step2_pending = 0
        self._doc_subscription: Any = None
        self._awareness_subscription: Any = None
        self.log = log

    @abstractmethod
    def _open(self) -> AbstractAsyncContextManager[Channel]:
        """Open one channel to the room; closing the context closes it."""

    def _describe(self) -> str:
        """Where the client connects, for messages."""
        return f"room {self.id!r}"

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[ChannelClient]:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self.closed.clear()
        self._given_up.clear()
        self._was_connected = False
        self._doc_subscription = self._doc.observe(self._on_local_update)
        self._awareness_subscription = self.awareness.observe(self._on_local_awareness)
        try:
            error: BaseException | None = None
            async with task_group() as tg:
                with move_on_after(self.timeout) as scope:
                    try:
                        await tg.start(self._run)
                        await self._first_sync()
                    except Exception as exc:
                        error = exc
                    if error is None and self._ended and not self._was_synchronized:
                        error = FatalClose(
                            f"{self._describe()} closed the connection before the first sync "
                            f"({self.close_code}: {self.close_reason}); not reconnecting"
                        )
                if error is None and not scope.cancelled_caught:
                    exc_raised = True
                    try:
                        yield self
                        exc_raised = False
                    finally:
                        if not exc_raised:
                            await self._leave()
                        tg.cancel_scope.cancel()
                tg.cancel_scope.cancel()
            if error is not None:
                raise error
            if scope.cancelled_caught:
                what = "for the first sync" if self._was_connected else "to connect"
                last = (
                    f" (the last connection closed with {self.close_code}: {self.close_reason})"
                    if self.close_code is not None
                    else ""
                )
                raise TimeoutError(f"waited {self.timeout} s {what} with {self._describe()}{last}")
        finally:
            self._doc.unobserve(self._doc_subscription)
            self.awareness.unobserve(self._awareness_subscription)
            self._notify(ClientStatus.CLOSED)

    async def _first_sync(self) -> None:
        """Wait for the first sync, or for the client to give up connecting (the server
        refused it for good), whichever comes first."""
        async with create_task_group() as waiting:

            async def until(flag: Flag) -> None:
                await flag.wait()
                waiting.cancel_scope.cancel()

            waiting.start_soon(until, self.synchronized)
            waiting.start_soon(until, self._ended)

    async def _leave(self) -> None:
        """Say goodbye to the others' presence and deliver what is pending, within limits.

        Changes made while disconnected wait for the next connection (up to ``timeout``
        seconds, or less if the caller cancels) rather than being dropped unsent.
        """
        if self.awareness.get_local_state():
            self.awareness.set_local_state(None)
        # Not shielded: a caller's own deadline or cancellation cuts the wait short.
        with move_on_after(self.timeout):
            while not self._given_up and (
                not self._delivered or (self.connected and not self._idle)
            ):
                if not self._delivered:
                    await _first_of(self._delivered, self._given_up)
                else:
                    await self._idle.wait()
        if not self._delivered:
            self.log.warning(
                "left %s with local changes it could not deliver (%s)",
                self._describe(),
                "it will not reconnect" if self._given_up else f"waited {self.timeout} s",
            )

    async def _run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        try:
            await self._connect_and_reconnect(task_status)
        finally:
            self._given_up.set()

    async def _connect_and_reconnect(self, task_status: TaskStatus[None]) -> None:
        attempt = 0
        started = False
        while True:
            try:
                async with self._open() as channel:
                    if not started:
                        task_status.started()
                        started = True
                    attempt = 0
                    await self._session(channel)
            except FatalClose:
                if not started:
                    raise
                self._ended.set()
                return
            except (OSError, ChannelClosed) as exc:
                if not started:
                    raise ConnectionError(
                        f"could not connect to {self._describe()}: {exc}"
                    ) from exc
                self.log.info("connection to %s lost: %s", self._describe(), exc)
            finally:
                self._outbox = None
                if self._in_flight > 0:
                    self._delivered.clear()
                self._in_flight = 0
                self._idle.set()
                self._forget_others()
                if self.connected:
                    self.connected.clear()
                    self.synchronized.clear()
                    self._notify(
                        ClientStatus.DISCONNECTED, code=self.close_code, reason=self.close_reason
                    )
            if not self.reconnect or self.close_code in _FATAL_CLOSE_CODES:
                self.log.warning(
                    "disconnected from %s (%s %s); not reconnecting",
                    self._describe(),
                    self.close_code,
                    self.close_reason,
                )
                self._ended.set()
                return
            delay = min(self.max_backoff, 0.05 * 2**attempt) * (0.5 + random.random() / 2)
            attempt += 1
            await sleep(delay)

    async def _session(self, channel: Channel) -> None:
        send, receive = create_memory_object_stream[_Item](math.inf)
        self._outbox = send
        self.close_code = None
        self.close_reason = ""
        self._was_connected = True
        self.connected.set()
        self._notify(ClientStatus.CONNECTED)
        async with create_task_group() as tg:
            tg.start_soon(self._send_loop, channel, receive)
            tg.start_soon(self._renew_presence)
            self._step2_pending = 1
            self._enqueue((sync_step1(self._doc.get_state()), None))
            if self.awareness.get_local_state():
                # Under a new clock, which sends it: the room may have dropped this state
                # with the previous connection, and takes a state back only with a newer
                # clock than the one it dropped.
                self.awareness.set_local_state(self.awareness.get_local_state())
            try:
                async for data in channel:
                    self._handle(channel, data)
            except ProtocolError as exc:
                self.log.warning("%s sent a malformed message: %s", self._describe(), exc)
                await channel.close(1002, str(exc))
                # Ours to report: the server's echo of the close may not arrive.
                self.close_code, self.close_reason = 1002, f"malformed message: {exc}"
                tg.cancel_scope.cancel()
                return
            tg.cancel_scope.cancel()
        self.close_code = getattr(channel, "close_code", None)
        self.close_reason = getattr(channel, "close_reason", "") or ""

    def _enqueue(self, item: _Item) -> None:
        if threading.get_ident() != self._thread and self._loop is not None:
            # A change made in another thread (the blocking form): queue it from the
            # loop's own thread, without waiting, since that thread may need the
            # document's lock that the caller holds.
            self._loop.call_soon_threadsafe(self._enqueue, item)
            return
        if self._outbox is None:
            if item[1] is not None:
                # A local change while disconnected: the next handshake carries it.
                self._delivered.clear()
            return
        try:
            self._outbox.send_nowait(item)
        except Exception:
            return
        self._in_flight += 1
        self._idle.clear()

    async def _send_loop(self, channel: Channel, receive: MemoryObjectReceiveStream[_Item]) -> None:
        try:
            while True:
                try:
                    batch = [await receive.receive()]
                except EndOfStream:
                    return
                while True:
                    try:
                        batch.append(receive.receive_nowait())
                    except (WouldBlock, EndOfStream):
                        break
                updates = [u for _, u in batch if u is not None]
                for message, update in batch:
                    if update is None:
                        await channel.send(message)
                if updates:
                    await channel.send(merged_update_message(updates))
                self._in_flight -= len(batch)
                if self._in_flight <= 0:
                    self._idle.set()
        except ChannelClosed:
            pass

    def _handle(self, channel: Channel, data: bytes) -> None:
        message = parse_message(data)
        if message.type == MessageType.SYNC:
            if message.sync_type == SyncType.STEP1:
                try:
                    update = self._doc.get_update(message.payload)
                except ValueError as exc:
                    raise ProtocolError(f"invalid state vector: {exc}") from None
                if self.auto_push:
                    self._enqueue((sync_step2(update), None))
                    # The reply carries every local change the server lacks.
                    self._delivered.set()
                else:
                    if update != EMPTY_UPDATE:
                        self._unpushed.append(update)
                    self._enqueue((sync_step2(EMPTY_UPDATE), None))
            else:
                if message.payload != EMPTY_UPDATE:
                    if self.auto_pull:
                        self._apply(message.payload)
                    else:
                        self._unpulled.append(message.payload)
                if message.sync_type == SyncType.STEP2:
                    self._step2_pending -= 1
                    if self._step2_pending <= 0 and not self.synchronized:
                        self._was_synchronized = True
                        self.synchronized.set()
                        self._notify(ClientStatus.SYNCHRONIZED)
        elif message.type == MessageType.AWARENESS:
            validate_awareness_update(message.payload)
            try:
                self.awareness.apply_awareness_update(message.payload, "remote")
            except Exception as exc:
                raise ProtocolError(f"invalid awareness update: {exc}") from None
        elif message.type == MessageType.CONTROL:
            self._on_control(parse_control(message.payload))

    def _on_control(self, notice: dict[str, Any]) -> None:
        """Handle a notice from the server."""
        if notice["type"] == "error":
            self.log.warning("%s: %s", self._describe(), notice.get("reason", "error"))
        elif notice["type"] == "epoch":
            epoch = str(notice.get("epoch", ""))
            if self.epoch is not None and epoch != self.epoch:
                self._reset(epoch)
            self.epoch = epoch
        self._notify(notice["type"], **{k: v for k, v in notice.items() if k != "type"})

    def _reset(self, epoch: str) -> None:
        """Replace the document by a new one synced from the room's new epoch.

        The old document's history is unrelated to the new epoch's: merging it would
        duplicate the content, so it is dropped (and ``doc`` and ``awareness`` are new
        objects, announced by the ``reset`` status).
        """
        self.log.warning(
            "%s started a new history (epoch %s): the document is replaced by the room's",
            self._describe(),
            epoch,
        )
        local_state = self.awareness.get_local_state()
        self._doc.unobserve(self._doc_subscription)
        self.awareness.unobserve(self._awareness_subscription)
        self._doc = Doc()
        self.awareness = Awareness(self._doc)
        self._doc_subscription = self._doc.observe(self._on_local_update)
        self._awareness_subscription = self.awareness.observe(self._on_local_awareness)
        self._unpushed.clear()
        self._unpulled.clear()
        self.synchronized.clear()
        self._step2_pending += 1
        self._enqueue((sync_step1(self._doc.get_state()), None))
        if local_state:
            self.awareness.set_local_state(local_state)
        self._notify(ClientStatus.RESET, epoch=epoch)

    def _apply(self, update: bytes) -> None:
        self._applying = True
        try:
            self._doc.apply_update(update)
        except ValueError as exc:
            raise ProtocolError(f"invalid update: {exc}") from None
        finally:
            self._applying = False

    def _on_local_update(self, event: TransactionEvent) -> None:
        if self._applying:
            return
        update = event.update
        if update == EMPTY_UPDATE:
            return
        if self.auto_push:
            self._enqueue((sync_update(update), update))
        else:
            self._unpushed.append(update)

    def _on_local_awareness(self, topic: str, changes: tuple[dict[str, Any], Any]) -> None:
        if topic == "update" and changes[1] == "local":
            self._send_local_awareness()

    def _forget_others(self) -> None:
        """Drop the others' presence when the connection goes: only the room can say who
        leaves meanwhile, and the next connection brings everyone still there."""
        own = self.awareness.client_id
        others = [client_id for client_id in self.awareness.meta if client_id != own]
        self.awareness.remove_awareness_states(
            [client_id for client_id in others if client_id in self.awareness.states],
            "disconnected",
        )
        # Their clocks too: the room sends the same states again under the same clocks,
        # which would otherwise be taken for news already seen.
        for client_id in others:
            del self.awareness.meta[client_id]

    async def _renew_presence(self) -> None:
        """Send the local presence again under a new clock, from time to time, so that
        the others know it is still here (JavaScript clients do the same)."""
        while True:
            await sleep(self.presence_renewal)
            state = self.awareness.get_local_state()
            if state:
                self.awareness.set_local_state(state)

    def _send_local_awareness(self) -> None:
        update = self.awareness.encode_awareness_update([self.awareness.client_id])
        self._enqueue((awareness_message(update), None))

    async def push(self) -> None:
        """Send the local changes made since the last push (with ``auto_push=False``).

        Changes stay pending while the client is disconnected and go with the next push.
        """
        if self._unpushed and self._outbox is not None:
            updates, self._unpushed = self._unpushed, []
            self._enqueue((merged_update_message(updates), None))
            while self.connected and not self._idle:
                await self._idle.wait()

    async def pull(self) -> None:
        """Apply the remote changes received since the last pull (with ``auto_pull=False``)."""
        if self._unpulled:
            updates, self._unpulled = self._unpulled, []
            for update in updates:
                self._apply(update)


async def _first_of(*flags: Flag) -> None:
    """Wait until any of the flags is set."""
    async with create_task_group() as tg:

        async def wait(flag: Flag) -> None:
            await flag.wait()
            tg.cancel_scope.cancel()

        for flag in flags:
            tg.start_soon(wait, flag)
