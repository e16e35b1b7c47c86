"""Rooms: a shared document and the clients connected to it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from anyio import (
    TASK_STATUS_IGNORED,
    AsyncContextManagerMixin,
    CancelScope,
    EndOfStream,
    Event,
    WouldBlock,
    create_memory_object_stream,
    create_task_group,
    sleep,
    sleep_forever,
)
from anyio.abc import TaskGroup, TaskStatus
from pycrdt import Awareness, Doc, TransactionEvent, merge_updates

from ._tasks import task_group
from .channel import Channel, ChannelClosed
from .protocol import (
    EMPTY_STATE,
    EMPTY_UPDATE,
    Message,
    MessageType,
    ProtocolError,
    SyncType,
    awareness_message,
    control_message,
    merged_update_message,
    parse_message,
    sync_step1,
    sync_step2,
    sync_update,
    validate_awareness_update,
)

__all__ = ["CloseCode", "Room", "RoomManager"]

log = logging.getLogger("jupyter_rooms")

# What a client's send queue holds: an encoded message, and the update it carries if
# it is a live update (so that a backlog of updates can be merged into one message).
_Item = tuple[bytes, "bytes | None"]

# How many queued messages a sender takes at once, at most, to merge.
_MAX_BATCH = 512

# How many changes at most follow the whole document's update before it is encoded
# afresh (each is a message of its own to a client that joins).
_WHOLE_SINCE_MAX = 256


class CloseCode:
    """Websocket close codes a room gives when it drops a client."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    POLICY = 1008
    TOO_BIG = 1009
    # Application codes (4000-4999): the client is too slow, or the room was closed.
    TOO_SLOW = 4008
    ROOM_CLOSED = 4010


class _Client:
    """The room's side of one connection: its channel and its bounded send queue."""

    def __init__(self, channel: Channel, max_backlog: int, read_only: bool) -> None:
        self.channel = channel
        self.read_only = read_only
        self.awareness_ids: set[int] = set()
        self.close_code = CloseCode.NORMAL
        self.close_reason = ""
        self.cancel_scope = CancelScope()
        self._send, self._receive = create_memory_object_stream[_Item](max_backlog)
        # A channel that can write without waiting takes messages straight from the
        # fan-out while nothing is queued for it: no task switch per client and message.
        # Once one message has to wait, the queue (bounded, merging) takes over until
        # the send loop has emptied it, so the order of messages is kept.
        self._send_now: Callable[[bytes], bool] | None = getattr(channel, "send_nowait", None)
        self._queued = False

    def enqueue(self, item: _Item) -> None:
        if self._send_now is not None and not self._queued:
            try:
                if self._send_now(item[0]):
                    return
            except ChannelClosed:
                self.drop(CloseCode.GOING_AWAY, "connection closed")
                return
        self._queued = True
        try:
            self._send.send_nowait(item)
        except WouldBlock:
            self.drop(CloseCode.TOO_SLOW, "client too slow: its send queue is full")
        except Exception:
            # The queue is closed: the client is already leaving.
            pass

    def drop(self, code: int, reason: str) -> None:
        if not self.cancel_scope.cancel_called:
            self.close_code = code
            self.close_reason = reason
            self.cancel_scope.cancel()

    async def send_loop(self) -> None:
        receive = self._receive
        try:
            while True:
                try:
                    batch = [await receive.receive()]
                except EndOfStream:
                    return
                while len(batch) < _MAX_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (WouldBlock, EndOfStream):
                        break
                for message in _coalesce(batch):
                    await self.channel.send(message)
                if not receive.statistics().current_buffer_used:
                    self._queued = False
        except ChannelClosed:
            self.drop(CloseCode.GOING_AWAY, "connection closed")

    def close_queue(self) -> None:
        self._send.close()
        self._receive.close()


def _coalesce(batch: list[_Item]) -> Iterable[bytes]:
    """Merge runs of consecutive live updates into one message each."""
    updates: list[bytes] = []
    for message, update in batch:
        if update is not None:
            updates.append(update)
            continue
        if updates:
            yield merged_update_message(updates)
            updates = []
        yield message
    if len(updates) == 1:
        yield batch[-1][0]
    elif updates:
        yield merged_update_message(updates)


class Room(AsyncContextManagerMixin):
    """A shared document and the clients that edit it.

    A room is used as ``async with Room(id) as room``; leaving the block stops everything
    the room started and disconnects its clients. A server starts
    [run][jupyter_rooms.Room.run] in the room's task group, then calls
    [serve][jupyter_rooms.Room.serve] once per client.

    Subclass it to give rooms more to do (load and save a file, relay to another server):
    start that work from ``run`` in ``self.task_group`` and then ``await super().run(...)``,
    and pass the subclass as ``room_factory`` to [bind][jupyter_rooms.bind].

    Args:
        id: The room's id: clients that ask for the same id share the room.
        doc: The document to share; a new one by default.
        max_backlog: How many messages may wait for a client before it is disconnected
            as too slow. Live updates waiting together are merged into one message.
    """

    def __init__(self, id: str, *, doc: Doc | None = None, max_backlog: int = 1024) -> None:
        self._id = id
        self._doc = doc if doc is not None else Doc()
        self._max_backlog = max_backlog
        self._clients: set[_Client] = set()
        self._origin: _Client | None = None
        self._task_group: TaskGroup | None = None
        self.log = log
        # While set, clients' changes wait until it is (see ``hold_changes``).
        self._changes_held: Event | None = None
        # How many clients' changes wait for ``take_changes`` right now.
        self._changes_waiting = 0
        self._changes_drained: Event | None = None
        # The whole document as an update, for clients that have nothing of it yet:
        # encoded once for all those who join (pages opening a large notebook), or given
        # by a subclass that has it at hand (a room just loaded), and followed by the
        # changes made since, until they add up to an eighth of it or to
        # ``_WHOLE_SINCE_MAX`` changes; then it is encoded afresh for the next one.
        self._whole_update: bytes | None = None
        self._whole_since: list[bytes] = []
        self._whole_since_bytes = 0
        # Whether ``run`` follows the document's changes (and the whole update with them).
        self._forwarding = False
        # While set, the document's changes wait here, with the client each came from,
        # instead of going out (see ``forwarding_held``).
        self._forwards_held: list[tuple[_Item, _Client | None]] | None = None
        self.awareness = Awareness(self._doc)
        # The room itself is not a participant: it only relays others' presence.
        self.awareness.set_local_state(None)

    @property
    def id(self) -> str:
        """The room's id."""
        return self._id

    @property
    def doc(self) -> Doc:
        """The room's shared document."""
        return self._doc

    @property
    def task_group(self) -> TaskGroup:
        """The task group that holds the room's background work, open while the room is."""
        if self._task_group is None:
            raise RuntimeError(f"room {self._id!r} is not open: use 'async with room'")
        return self._task_group

    @property
    def client_count(self) -> int:
        """How many clients are connected."""
        return len(self._clients)

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Room]:
        async with task_group() as tg:
            self._task_group = tg
            try:
                yield self
            finally:
                for client in list(self._clients):
                    client.drop(CloseCode.ROOM_CLOSED, "room closed")
                tg.cancel_scope.cancel()
                self._task_group = None

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        """Forward every change of the document to the clients that did not make it.

        Runs until the room closes. Changes made to ``room.doc`` by code in the server go
        to every client.

        Args:
            task_status: Set once the room forwards changes.
        """
        subscription = self._doc.observe(self._forward_update)
        awareness_subscription = self.awareness.observe(self._forward_awareness)
        self._forwarding = True
        try:
            task_status.started()
            await sleep_forever()
        finally:
            self._forwarding = False
            self._keep_whole(None)
            self._doc.unobserve(subscription)
            self.awareness.unobserve(awareness_subscription)

    async def serve(
        self,
        client: Channel,
        *,
        read_only: bool = False,
        task_status: TaskStatus[None] = TASK_STATUS_IGNORED,
    ) -> None:
        """Synchronize one client with the room, until it leaves.

        Starts the sync handshake, applies the client's updates to the room's document,
        relays its presence, and sends it everyone else's changes. A client that sends
        a malformed message, or falls too far behind, is disconnected with a reason;
        the room and its other clients are not affected.

        Args:
            client: The channel to the client.
            read_only: Refuse the client's updates (it still receives the document).
            task_status: Set once the client is part of the room.
        """
        conn = _Client(client, self._max_backlog, read_only)
        self._clients.add(conn)
        try:
            with conn.cancel_scope:
                async with create_task_group() as tg:
                    conn.enqueue((sync_step1(self._doc.get_state()), None))
                    if self.awareness.states:
                        states = list(self.awareness.states)
                        update = self.awareness.encode_awareness_update(states)
                        conn.enqueue((awareness_message(update), None))
                    tg.start_soon(conn.send_loop)
                    task_status.started()
                    await self._receive_loop(conn)
                    tg.cancel_scope.cancel()
        finally:
            self._clients.discard(conn)
            conn.close_queue()
            if conn.awareness_ids:
                self.awareness.remove_awareness_states(list(conn.awareness_ids), conn)
            with CancelScope(shield=True):
                await client.close(conn.close_code, conn.close_reason)

    @contextmanager
    def forwarding_held(self) -> Iterator[None]:
        """Keep the document's changes made in the block from the clients until it ends,
        then send them, in order, to every client but the one each came from.

        For a change the room makes itself that must be on record before anyone has it
        (a subclass that keeps a history writes it in the block): a client that got it
        from a server that then stopped before recording it would give it back on
        reconnecting, beside the same change made again by the restarted server, as
        another, so twice. Blocks may nest; the outermost sends.
        """
        if self._forwards_held is not None:
            yield
            return
        held: list[tuple[_Item, _Client | None]] = []
        self._forwards_held = held
        try:
            yield
        finally:
            self._forwards_held = None
            for item, origin in held:
                self._send_to_others(item, origin)

    def hold_changes(self) -> None:
        """Have clients' changes wait until ``take_changes`` is called: they are neither
        applied nor sent to others meanwhile, while clients still get the document (a
        subclass that must be able to keep changes before it takes them). Changes that
        arrived are applied even if the room or the client closes meanwhile, so a hold
        must end soon, whatever happens."""
        if self._changes_held is None:
            self._changes_held = Event()

    def take_changes(self) -> None:
        """Apply clients' changes again, those that waited first, in order."""
        held, self._changes_held = self._changes_held, None
        if held is not None:
            held.set()

    async def changes_taken(self) -> None:
        """Return once every change that waited for ``take_changes`` is applied."""
        while self._changes_waiting:
            if self._changes_drained is None:
                self._changes_drained = Event()
            await self._changes_drained.wait()

    async def _changes_may_wait(self, message: Message) -> None:
        held = self._changes_held
        if held is not None and message.type == MessageType.SYNC:
            if message.sync_type != SyncType.STEP1 and message.payload != EMPTY_UPDATE:
                # A client that sent a change counts on it: it is not dropped. Its
                # receive loop applies it before it awaits anything else.
                self._changes_waiting += 1
                try:
                    with CancelScope(shield=True):
                        await held.wait()
                finally:
                    self._changes_waiting -= 1
                    # Whoever waits for this runs once this loop has applied the change
                    # (nothing between here and there awaits).
                    drained = self._changes_drained
                    if not self._changes_waiting and drained is not None:
                        self._changes_drained = None
                        drained.set()

    async def _receive_loop(self, conn: _Client) -> None:
        recv_nowait = getattr(conn.channel, "recv_nowait", None)
        try:
            async for data in conn.channel:
                if recv_nowait is None:
                    message = parse_message(data)
                    if self._changes_held is not None:
                        await self._changes_may_wait(message)
                    self._handle(conn, message)
                    continue
                # Take what else the client has sent meanwhile, and apply its run of
                # live updates as one: one change for the room to log and fan out
                # instead of one per keystroke.
                updates: list[bytes] = []
                next_data: bytes | None = data
                while next_data is not None and len(updates) < _MAX_BATCH:
                    try:
                        message = parse_message(next_data)
                    except ProtocolError:
                        # The client is refused, but what it sent before still counts.
                        self._apply_all(conn, updates)
                        raise
                    if self._changes_held is not None:
                        await self._changes_may_wait(message)
                    if self._is_live_update(conn, message):
                        updates.append(message.payload)
                    else:
                        self._apply_all(conn, updates)
                        updates = []
                        self._handle(conn, message)
                    try:
                        next_data = recv_nowait()
                    except ChannelClosed:
                        # What the client sent before it left still counts.
                        self._apply_all(conn, updates)
                        raise
                self._apply_all(conn, updates)
                if next_data is not None:
                    message = parse_message(next_data)
                    if self._changes_held is not None:
                        await self._changes_may_wait(message)
                    self._handle(conn, message)
        except ProtocolError as exc:
            self.log.warning("room %r: dropping a client: %s", self._id, exc)
            conn.drop(CloseCode.PROTOCOL_ERROR, f"protocol error: {exc}")
        except ChannelClosed:
            pass

    @staticmethod
    def _is_live_update(conn: _Client, message: Message) -> bool:
        return (
            message.type == MessageType.SYNC
            and message.sync_type != SyncType.STEP1
            and message.payload != EMPTY_UPDATE
            and not conn.read_only
        )

    def _apply_all(self, conn: _Client, updates: list[bytes]) -> None:
        if len(updates) > 1:
            try:
                merged = merge_updates(*updates)
            except ValueError:
                # One of them is malformed: apply the good ones before it, in order,
                # and let the bad one refuse the client.
                pass
            else:
                self._apply(conn, merged)
                return
        for update in updates:
            self._apply(conn, update)

    def _handle(self, conn: _Client, message: Message) -> None:
        if message.type == MessageType.SYNC:
            if message.sync_type == SyncType.STEP1:
                if message.payload == EMPTY_STATE:
                    update = self._whole_update
                    if update is None:
                        update = self._doc.get_update()
                        self._keep_whole(update)
                    # The changes since go first: the reply completes the document, so
                    # that a client is whole once its first sync is over.
                    for change in self._whole_since:
                        conn.enqueue((sync_update(change), change))
                else:
                    try:
                        update = self._doc.get_update(message.payload)
                    except ValueError as exc:
                        raise ProtocolError(f"invalid state vector: {exc}") from None
                conn.enqueue((sync_step2(update), None))
            elif message.payload != EMPTY_UPDATE:
                if conn.read_only:
                    notice = {"type": "error", "reason": "read-only: your changes were refused"}
                    conn.enqueue((control_message(notice), None))
                    return
                self._apply(conn, message.payload)
        elif message.type == MessageType.AWARENESS:
            validate_awareness_update(message.payload)
            try:
                self.awareness.apply_awareness_update(message.payload, conn)
            except Exception as exc:
                raise ProtocolError(f"invalid awareness update: {exc}") from None
        else:
            self.on_message(conn.channel, message)

    def _apply(self, conn: _Client, update: bytes) -> None:
        self._origin = conn
        try:
            self._doc.apply_update(update)
        except ValueError as exc:
            error = ProtocolError(f"invalid update: {exc}")
            if not self.on_rejected_update(conn.channel, error):
                raise error from None
        finally:
            self._origin = None

    def on_message(self, client: Channel, message: Message) -> None:
        """Handle a message that is neither sync nor awareness (RAW or CONTROL).

        The base room ignores them; subclasses that speak such messages override this.

        Args:
            client: The channel the message came from.
            message: The parsed message.
        """
        self.log.debug("room %r: ignoring a %s message", self._id, message.type.name)

    def on_rejected_update(self, client: Channel, error: ProtocolError) -> bool:
        """Decide what happens to a client whose update cannot be applied.

        The base room returns ``False``: the client is disconnected as any client that
        breaks the protocol. A subclass may tell the client instead and keep it.

        Args:
            client: The channel the update came from.
            error: Why it cannot be applied.

        Returns:
            Whether the client stays connected.
        """
        return False

    def send(self, client: Channel, message: bytes) -> None:
        """Queue a message for one client of this room, behind what it already awaits.

        Args:
            client: The client's channel.
            message: An encoded message.
        """
        for conn in self._clients:
            if conn.channel is client:
                conn.enqueue((message, None))
                return

    def broadcast(self, message: bytes) -> None:
        """Queue a message for every client of this room.

        Args:
            message: An encoded message.
        """
        for conn in list(self._clients):
            conn.enqueue((message, None))

    def disconnect(self, client: Channel, code: int, reason: str) -> None:
        """Disconnect one client with a reason.

        Args:
            client: The client's channel.
            code: A websocket close code.
            reason: Why, for the client.
        """
        for conn in self._clients:
            if conn.channel is client:
                conn.drop(code, reason)

    def _keep_whole(self, update: bytes | None) -> None:
        """Keep ``update`` as the whole document for clients that have nothing of it yet
        (``None``: encode it when one asks)."""
        self._whole_update = update
        self._whole_since = []
        self._whole_since_bytes = 0

    def _follow_whole(self, update: bytes) -> None:
        """Add a change to those sent after the whole document, or drop the whole
        document once they add up to an eighth of it (or to many small ones)."""
        if self._whole_update is None:
            return
        size = self._whole_since_bytes + len(update)
        if len(self._whole_since) >= _WHOLE_SINCE_MAX or size > len(self._whole_update) // 8:
            self._keep_whole(None)
            return
        self._whole_since.append(update)
        self._whole_since_bytes = size

    def _forward_update(self, event: TransactionEvent) -> None:
        update = event.update
        if update == EMPTY_UPDATE:
            return
        self._follow_whole(update)
        item = (sync_update(update), update)
        origin = self._origin
        if self._forwards_held is not None:
            self._forwards_held.append((item, origin))
            return
        self._send_to_others(item, origin)

    def _send_to_others(self, item: _Item, origin: object) -> None:
        """Queue a message for every client but the one it came from (``origin``)."""
        for conn in list(self._clients):
            if conn is not origin:
                conn.enqueue(item)

    def _forward_awareness(self, topic: str, changes: tuple[dict[str, Any], Any]) -> None:
        if topic != "update":
            return
        change, origin = changes
        if isinstance(origin, _Client):
            claimed = {*change["added"], *change["updated"]}
            origin.awareness_ids.update(claimed)
            origin.awareness_ids.difference_update(change["removed"])
            # A client that reconnected speaks for itself on its new connection: the old
            # one, if the room has not seen it close yet, must not take its presence along.
            for conn in self._clients:
                if conn is not origin:
                    conn.awareness_ids.difference_update(claimed)
        ids = change["added"] + change["updated"] + change["removed"]
        message = awareness_message(self.awareness.encode_awareness_update(ids))
        self._send_to_others((message, None), origin)


class _Entry:
    """A room the manager holds, and how many clients use it."""

    def __init__(self) -> None:
        self.room: Room | None = None
        self.clients = 0
        self.ready = Event()
        self.stop = Event()
        self.closed = Event()
        self.cleanup: CancelScope | None = None


class RoomManager(AsyncContextManagerMixin):
    """Opens rooms when their first client arrives and closes them after the last leaves.

    Args:
        room_factory: Builds a room from its id: ``Room`` or a subclass (or any callable
            that returns one).
        cleanup_delay: Seconds to keep a room open after its last client left, so that a
            client that reconnects finds it still open. ``0`` closes it at once.
    """

    def __init__(
        self,
        room_factory: Callable[[str], Room] = Room,
        *,
        cleanup_delay: float = 0.0,
    ) -> None:
        self._room_factory = room_factory
        self.cleanup_delay = cleanup_delay
        self._entries: dict[str, _Entry] = {}
        self._task_group: TaskGroup | None = None

    @property
    def rooms(self) -> Mapping[str, Room]:
        """The open rooms, by id."""
        return {id: e.room for id, e in self._entries.items() if e.room is not None}

    def has(self, id: str) -> bool:
        """Whether a room is open, opening or closing (``rooms`` holds open ones only)."""
        return id in self._entries

    def client_count(self, id: str) -> int:
        """How many clients use a room (0 if it is not open)."""
        entry = self._entries.get(id)
        return entry.clients if entry else 0

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[RoomManager]:
        async with task_group() as tg:
            self._task_group = tg
            try:
                yield self
            finally:
                for entry in self._entries.values():
                    # A room waiting out its cleanup delay closes now, with the rest.
                    if entry.cleanup is not None:
                        entry.cleanup.cancel()
                    entry.stop.set()
                self._task_group = None

    async def _keep_room(self, id: str, entry: _Entry, *, task_status: TaskStatus[None]) -> None:
        try:
            room = self._room_factory(id)
            async with room:
                await room.task_group.start(room.run)
                entry.room = room
                task_status.started()
                await entry.stop.wait()
        except Exception:
            if entry.room is None:
                # It never opened: the client that asked for it gets the error.
                raise
            # A room that fails once open closes alone (its clients are disconnected and
            # may come back to a new one): the server and its other rooms carry on.
            log.exception("room %r failed and was closed", id)
        finally:
            # A room closed before its cleanup delay ran out: its timer has nothing left
            # to do, and must not hold the manager open.
            if entry.cleanup is not None:
                entry.cleanup.cancel()
            # Under the id it has now, which a rename may have changed.
            for key in [key for key, value in self._entries.items() if value is entry]:
                del self._entries[key]
            entry.closed.set()

    async def acquire(self, id: str) -> Room:
        """Open a room (or take the open one) and count one more user of it.

        Every call must be matched by one call to [release][jupyter_rooms.RoomManager.release].

        Args:
            id: The room's id.

        Returns:
            The open room.
        """
        if self._task_group is None:
            raise RuntimeError("the room manager is not running: use 'async with'")
        while True:
            entry = self._entries.get(id)
            if entry is None:
                entry = self._entries[id] = _Entry()
                try:
                    await self._task_group.start(self._keep_room, id, entry)
                finally:
                    entry.ready.set()
            else:
                await entry.ready.wait()
                if entry.room is None or entry.stop.is_set():
                    await entry.closed.wait()
                    continue
            assert entry.room is not None
            entry.clients += 1
            if entry.cleanup is not None:
                entry.cleanup.cancel()
                entry.cleanup = None
            return entry.room

    def release(self, id: str) -> None:
        """Count one user of a room fewer; close the room after ``cleanup_delay`` if none is left.

        Args:
            id: The room's id.
        """
        entry = self._entries.get(id)
        if entry is None:
            return
        entry.clients -= 1
        if entry.clients > 0:
            return
        if self.cleanup_delay <= 0 or self._task_group is None:
            entry.stop.set()
            return
        entry.cleanup = CancelScope()
        self._task_group.start_soon(self._cleanup_later, entry, entry.cleanup)

    async def _cleanup_later(self, entry: _Entry, scope: CancelScope) -> None:
        with scope:
            await sleep(self.cleanup_delay)
            if entry.clients == 0:
                entry.stop.set()

    @asynccontextmanager
    async def use(self, id: str) -> AsyncIterator[Room]:
        """Use a room for the duration of a block: ``async with manager.use(id) as room``.

        Args:
            id: The room's id.

        Yields:
            The open room.
        """
        room = await self.acquire(id)
        try:
            yield room
        finally:
            # The room may have been renamed meanwhile: release it under its id now.
            self.release(room.id)

    async def serve(self, id: str, client: Channel, *, read_only: bool = False) -> None:
        """Serve one client in the room it asked for, opening the room if needed.

        Args:
            id: The room's id.
            client: The channel to the client.
            read_only: Refuse the client's updates.
        """
        async with self.use(id) as room:
            await room.serve(client, read_only=read_only)

    def rename_room(self, old: str, new: str) -> Room | None:
        """Give an open room a new id: clients already in it stay, new clients join it
        under the new id.

        Args:
            old: The room's id now.
            new: Its new id; no other room may be open under it.

        Returns:
            The renamed room, or ``None`` if no room is open under ``old``.

        Raises:
            KeyError: A room is already open under ``new``.
        """
        entry = self._entries.get(old)
        if entry is None or old == new:
            return entry.room if entry is not None else None
        if new in self._entries:
            raise KeyError(f"a room is already open under {new!r}")
        del self._entries[old]
        self._entries[new] = entry
        if entry.room is not None:
            entry.room._id = new
        return entry.room

    async def close_room(self, id: str, *, wait: bool = True) -> None:
        """Close a room now, disconnecting its clients.

        Args:
            id: The room's id.
            wait: Wait until the room has finished closing.
        """
        entry = self._entries.get(id)
        if entry is None:
            return
        entry.stop.set()
        if wait:
            await entry.closed.wait()
