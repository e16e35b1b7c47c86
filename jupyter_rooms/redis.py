"""Rooms shared by several servers through Redis.

Each room has a Redis stream of updates that every server with the room open appends
its own clients' changes to, and a channel on which each append is published with the
entry's id, so that the other servers get it at once; presence goes through the
channel only. A server reads the stream when it opens the room and after any gap in
what the channel brought (Redis was away), from the last entry it has (or from the
snapshot, if a compaction folded in entries it had not read). The room also
has a snapshot that stands for the stream's compacted past, a hash of metadata
that the room class shares between servers (a file-bound room keeps its epoch and what
its file was last saved with there), and a lock with expiry that names the one server
allowed to save and compact the room. A server that opens a room late loads the
snapshot and the stream after it, so it starts from the same history as the others and
duplicates nothing.

Keys, for a room ``ID`` and the prefix ``P`` (default ``jupyter_rooms:``):
``P{ID}:updates`` (stream: fields ``u`` the update, ``s`` the sender: the server and
which of its openings of the room),
``P{ID}:live`` (the channel: updates with their ids, presence), ``P{ID}:snapshot``
(hash: ``update`` and ``cut``, the last stream id it includes), ``P{ID}:meta`` (hash:
the room class's shared metadata, and ``v`` its version), ``P{ID}:saver`` (the saving
server's id, with an expiry); and for each running server, ``Pserver:{LIVE}`` (its
heartbeat: a key with a short expiry that it sets again every few seconds, ``LIVE``
being a random id per server process).

Presence crosses servers as it comes: each server knows which server relayed each
client's state. A server that stops beating (it was killed) has the states it relayed
removed by the others; states from other servers that are not renewed within
``presence_timeout`` (30 s, as y-protocols clients time out) are removed too, as a last
resort. Clients renew their presence every 15 s (JupyterLab's do, and so do ours).

Turn it on with ``redis_room_factory(url)`` as a server's ``room_factory`` (the
websocket wire does it for ``bind("websocket", redis_url=...)``, the Jupyter extension
for its ``redis_url`` setting). It needs the ``redis`` package:
``pip install jupyter_rooms[redis]``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

from anyio import (
    TASK_STATUS_IGNORED,
    CancelScope,
    Event,
    Lock,
    create_task_group,
    current_time,
    move_on_after,
    sleep,
)
from anyio.abc import TaskStatus
from pycrdt import TransactionEvent, merge_updates

from .protocol import EMPTY_UPDATE
from .room import Room

__all__ = ["DEFAULT_PREFIX", "RedisRoom", "redis_room_factory"]


DEFAULT_PREFIX = "jupyter_rooms:"

# Connections a server opens to Redis at most; commands beyond wait for one.
_MAX_CONNECTIONS = 32

# Updates waiting for Redis are merged into one when there are this many.
_MAX_OUTGOING = 1024

# A server's heartbeat: how often it sets its key, and how long the key lasts. Another
# server takes it for dead when the key is missing twice in a row, checked as often:
# the presence it relayed goes within about 10 s of its death.
_HEARTBEAT = 2.0
_HEARTBEAT_TTL = 6.0

# Retrying an unreachable Redis: the first wait, and the longest.
_FIRST_BACKOFF = 0.25
_MAX_BACKOFF = 3.0

# Take the saver lock if it is free (2), or extend it if it is ours (1); 0 if another
# server holds it. A retry after a lost reply finds the lock its own: safe.
_TAKE_OR_RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
    redis.call('pexpire', KEYS[1], ARGV[2])
    return 1
end
if not holder then
    redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 2
end
return 0
"""

# Release the saver lock if it is still ours.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

# Append an update to a room's stream and publish it, with its id, on the room's channel:
# in one script, so that the channel brings entries in the stream's order.
_APPEND = """
local id = redis.call('xadd', KEYS[1], '*', 'u', ARGV[1], 's', ARGV[2])
redis.call('publish', KEYS[2], 'u' .. ARGV[2] .. '\\n' .. id .. ' ' .. ARGV[1])
return id
"""

# Fold a room's stream into its snapshot, for the saver only (ARGV[1]) and never back to an
# older cut than the snapshot has: a server that lost the lock without knowing yet, or
# lags, must not replace a newer snapshot, whose entries may be trimmed already.
# ARGV: server, the document, its cut, the first stream id to keep.
_COMPACT = """
if redis.call('get', KEYS[3]) ~= ARGV[1] then
    return 0
end
local old = redis.call('hget', KEYS[1], 'cut')
if old then
    local old_ms, old_seq = string.match(old, '^(%d+)-(%d+)$')
    local ms, seq = string.match(ARGV[3], '^(%d+)-(%d+)$')
    old_ms, old_seq, ms, seq = tonumber(old_ms), tonumber(old_seq), tonumber(ms), tonumber(seq)
    if old_ms > ms or (old_ms == ms and old_seq > seq) then
        return 0
    end
end
redis.call('hset', KEYS[1], 'update', ARGV[2], 'cut', ARGV[3])
redis.call('xtrim', KEYS[2], 'MINID', ARGV[4])
return 1
"""

# The saver's write (ARGV[1]: its id) of fields of the shared metadata (from ARGV[5], name
# and value in turn), with an update appended to the stream (ARGV[3], from ARGV[4]; none
# if empty), only while the lock is its and, unless ARGV[2] is empty, the record of what
# the file holds (the field ``saved``) is still ARGV[2]: the others see all of it or
# nothing. Nil, with nothing written, if refused; else the metadata's new version.
_STORE_AS_SAVER = """
if redis.call('get', KEYS[2]) ~= ARGV[1] then
    return nil
end
if ARGV[2] ~= '' and redis.call('hget', KEYS[1], 'saved') ~= ARGV[2] then
    return nil
end
if ARGV[3] ~= '' then
    local id = redis.call('xadd', KEYS[3], '*', 'u', ARGV[3], 's', ARGV[4])
    redis.call('publish', KEYS[4], 'u' .. ARGV[4] .. '\\n' .. id .. ' ' .. ARGV[3])
end
for i = 5, #ARGV, 2 do
    redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1])
end
return redis.call('hincrby', KEYS[1], 'v', 1)
"""

# Set fields of the shared metadata and count one more version of it.
_STORE_META = """
for i = 1, #ARGV, 2 do
    redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1])
end
return redis.call('hincrby', KEYS[1], 'v', 1)
"""

# Put back metadata a restarted Redis lost, unless what it holds is as new (ARGV[1]).
_RESTORE_META = """
local version = tonumber(redis.call('hget', KEYS[1], 'v') or '0')
if version >= tonumber(ARGV[1]) then
    return 0
end
for i = 2, #ARGV, 2 do
    redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('hset', KEYS[1], 'v', ARGV[1])
return 1
"""


def _import_redis() -> Any:
    try:
        import redis.asyncio
    except ImportError:
        raise ImportError(
            "rooms shared through Redis need the 'redis' package: "
            "pip install 'jupyter_rooms[redis]'"
        ) from None
    return redis.asyncio


def _stream_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class _Connection:
    """What the rooms of one server share: one Redis client (a bounded pool of
    connections, closed with the last room) and one subscription to all their channels.

    The task that reads the subscription belongs to one of the rooms (the first to need
    it); when that room closes, another takes over. It also tells, once per outage for
    the whole server, that Redis is away or back.
    """

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.url = url
        self.prefix = prefix
        # This server process, in its heartbeat and in what its rooms publish.
        self.live_id = uuid4().hex[:12]
        # The servers whose heartbeat was seen: only those can be found dead.
        self.seen_alive: set[str] = set()
        # redis.asyncio objects; typed loosely since redis is an optional dependency.
        self.client: Any = None
        self.append: Any = None
        self.pubsub: Any = None
        self.users = 0
        self.down = False
        self.rooms: dict[str, RedisRoom] = {}
        self.reader: RedisRoom | None = None
        self.reader_gone = Event()
        # Rooms subscribe one at a time: the first subscription opens the connection.
        self.subscribing = Lock()

    def acquire(self) -> Any:
        if self.client is None:
            redis = _import_redis()
            from redis.backoff import ExponentialBackoff
            from redis.exceptions import ConnectionError, TimeoutError

            # Connections the pool kept from before a restart of Redis fail once: retry
            # on a new one. Commands wait for a free connection rather than fail when
            # all are busy. A reply slower than the socket timeout means a Redis that
            # hangs, handled as one that is down.
            pool = redis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=_MAX_CONNECTIONS,
                timeout=None,
                socket_connect_timeout=5,
                socket_timeout=10,
                retry=redis.retry.Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
                retry_on_error=[ConnectionError, TimeoutError],
            )
            self.client = redis.Redis(connection_pool=pool)
            self.append = self.client.register_script(_APPEND)
            self.pubsub = _subscription(pool)
        self.users += 1
        return self.client

    async def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.client is not None:
            client, self.client = self.client, None
            pubsub, self.pubsub = self.pubsub, None
            await pubsub.aclose()
            await client.aclose()
            await client.connection_pool.disconnect()

    async def add(self, room: RedisRoom) -> None:
        """Have a room's channel read from now on."""
        self.rooms[room._redis_channel] = room
        async with self.subscribing:
            await self.pubsub.subscribe(room._redis_channel)

    async def remove(self, room: RedisRoom) -> None:
        if self.rooms.get(room._redis_channel) is room:
            del self.rooms[room._redis_channel]
            if self.pubsub is not None and self.pubsub.connection is not None:
                try:
                    async with self.subscribing:
                        await self.pubsub.unsubscribe(room._redis_channel)
                except Exception:
                    pass

    async def read_for(self, room: RedisRoom) -> None:
        """Run the server's reader and heartbeat in ``room``'s task, or wait until another
        room's reader stops and try again; ends only when cancelled."""
        while True:
            if self.reader is None:
                self.reader = room
                try:
                    async with create_task_group() as tg:
                        tg.start_soon(self._beat)
                        await self._read(room.log)
                finally:
                    self.reader = None
                    gone, self.reader_gone = self.reader_gone, Event()
                    gone.set()
            else:
                await self.reader_gone.wait()

    async def _read(self, logger: logging.Logger) -> None:
        failures = 0
        connects = self.pubsub.connects
        while True:
            try:
                if failures:
                    # Subscribe afresh, then have each room read what it missed.
                    async with self.subscribing:
                        await self.pubsub.aclose()
                        if self.rooms:
                            await self.pubsub.subscribe(*self.rooms)
                    connects = self.pubsub.connects
                    await self._catch_up()
                    failures = 0
                    self.report_back(logger)
                message = await self.pubsub.get_message(timeout=1.0)
                if self.pubsub.connects != connects:
                    # The subscription was lost and made again: what was published
                    # meanwhile never came.
                    connects = self.pubsub.connects
                    await self._catch_up()
            except Exception as exc:
                failures += 1
                for room in self.rooms.values():
                    room._redis_down = True
                self.report_down(logger, exc)
                await sleep(_backoff(failures))
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"].decode()
            target = self.rooms.get(channel)
            if target is not None:
                target._redis_receive(message["data"])

    def _alive_key(self, live_id: str) -> str:
        return f"{self.prefix}server:{live_id}"

    async def _beat(self) -> None:
        """Say that this server runs, and have the presence relayed by servers that
        stopped saying so removed from this server's rooms."""
        missing: dict[str, int] = {}
        while True:
            try:
                await self.client.set(
                    self._alive_key(self.live_id), b"", px=int(_HEARTBEAT_TTL * 1000)
                )
                relayed = {
                    live_id
                    for room in list(self.rooms.values())
                    for live_id in room._redis_relayed.values()
                }
                relayed.discard(self.live_id)
                # Only the servers whose presence is still shown here matter.
                self.seen_alive &= relayed
                missing = {i: n for i, n in missing.items() if i in relayed}
                lives = sorted(relayed)
                found = await self.client.mget([self._alive_key(i) for i in lives]) if lives else []
                gone = set()
                for live_id, value in zip(lives, found, strict=True):
                    if value is not None:
                        self.seen_alive.add(live_id)
                        missing.pop(live_id, None)
                    elif live_id in self.seen_alive:
                        # Twice in a row: not a Redis that restarted empty a moment ago
                        # while the other server had yet to beat again.
                        missing[live_id] = missing.get(live_id, 0) + 1
                        if missing[live_id] >= 2:
                            gone.add(live_id)
                for live_id in gone:
                    missing.pop(live_id)
                    self.seen_alive.discard(live_id)
                if gone:
                    for room in list(self.rooms.values()):
                        room._redis_servers_gone(gone)
            except Exception:
                # Redis is away (the reader says so): nobody is judged on what it lost.
                missing.clear()
            await sleep(_HEARTBEAT)

    async def _catch_up(self) -> None:
        for room in list(self.rooms.values()):
            await room._redis_back()

    def report_down(self, logger: logging.Logger, exc: Exception) -> None:
        if not self.down:
            self.down = True
            logger.warning(
                "rooms: Redis is unreachable (%s); each room keeps serving this server's "
                "clients, and their changes are sent when it is back",
                exc,
            )

    def report_back(self, logger: logging.Logger) -> None:
        if self.down:
            self.down = False
            logger.info("rooms: Redis is back")


def _subscription(pool: Any) -> Any:
    """A pub/sub connection that counts its connections: after the first, the
    subscription was lost for a while, and messages with it."""
    from redis.asyncio.client import PubSub

    class Subscription(PubSub):
        connects = 0

        async def on_connect(self, connection: Any) -> None:
            self.connects += 1
            await super().on_connect(connection)

    return Subscription(pool, ignore_subscribe_messages=True)


class _Relayed:
    """The origin of presence that came through Redis: which server process sent it."""

    __slots__ = ("live_id",)

    def __init__(self, live_id: str) -> None:
        self.live_id = live_id


# The origin of presence this server removed by itself (timed out, or its server died).
_EXPIRED = "expired"


def _live_id(sender: str) -> str:
    """The server process in a sender tag (``server/live.opening``)."""
    return sender.rpartition("/")[2].partition(".")[0]


def _backoff(failures: int) -> float:
    """Seconds to wait after this many failures in a row: growing, capped, jittered."""
    delay = min(_MAX_BACKOFF, _FIRST_BACKOFF * 2 ** min(failures, 8))
    return float(delay * (0.5 + random.random()))


class RedisRoom(Room):
    """A room whose document and presence are shared with the same room on other servers.

    Use [redis_room_factory][jupyter_rooms.redis.redis_room_factory] to make one; it can
    also be combined with another ``Room`` subclass, whose ``run`` then starts from the
    history loaded from Redis. Such a class finds here what it needs to persist the room
    from one server only: ``is_saver``, metadata shared with the other servers
    (``load_shared_meta``, ``store_shared_meta``, ``drop_shared``), and a call to its own
    ``saver_changed()`` method, if it has one, whenever ``is_saver`` changes.

    Args:
        id: The room's id.
        connection: The server's shared Redis connection.
        prefix: Put before every key, so that several deployments can share one Redis.
        server_id: This server's id: in the saver lock, and in what it sends (with
            which opening of the room sent it).
        lock_ttl: Seconds the saver lock lasts unless renewed (it is renewed at a third).
        compact_after: Compact the stream into the snapshot when it has this many entries.
        compact_grace: Seconds of stream kept after a compaction, for servers that lag.
        presence_timeout: Seconds after which the presence of a client of another server
            that was not renewed is removed (clients renew theirs every 15 s). The
            presence relayed by a server that died goes sooner, when its heartbeat stops.
        kwargs: Passed on to the next room class.
    """

    def __init__(
        self,
        id: str,
        *,
        connection: _Connection,
        prefix: str = DEFAULT_PREFIX,
        server_id: str | None = None,
        lock_ttl: float = 10.0,
        compact_after: int = 1000,
        compact_grace: float = 60.0,
        presence_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(id, **kwargs)
        # Every attribute and helper here starts with _redis_: this class is mixed into
        # other room classes, whose own names must not collide with these.
        self._redis_connection = connection
        self.server_id = server_id or uuid4().hex
        # What this room sends is tagged with this opening of it, not only the server: a
        # room that closes and opens again on the same server starts without what it
        # sent before, so it must apply those entries like anyone else's.
        # The server process's id comes first in it: the presence this room relays is
        # removed elsewhere when that process stops beating.
        self._redis_sender = f"{self.server_id}/{connection.live_id}.{uuid4().hex[:8]}"
        self.lock_ttl = lock_ttl
        self.compact_after = compact_after
        self.compact_grace = compact_grace
        self.presence_timeout = presence_timeout
        # The clients whose presence came from another server: which server process.
        self._redis_relayed: dict[int, str] = {}
        key = f"{prefix}{id}"
        self._redis_updates_key = f"{key}:updates"
        self._redis_channel = f"{key}:live"
        self._redis_snapshot_key = f"{key}:snapshot"
        self._redis_meta_key = f"{key}:meta"
        self._redis_saver_key = f"{key}:saver"
        self._redis_last_id = "0-0"
        self._redis_applying = False
        self._redis_outgoing: list[bytes] = []
        # Whose presence changed since it was last published: encoded when it is sent,
        # so that what waits for Redis is one entry per client, however often it moved.
        self._redis_outgoing_awareness: set[int] = set()
        self._redis_wake = Event()
        self._redis: Any = None
        self._redis_holds_lock = False
        # Until when (this event loop's clock) the lock is surely ours: the lock's time to
        # live counted from when the last renewal was sent, before Redis ran it.
        self._redis_lock_until = 0.0
        self._redis_down = False
        self._redis_failures = 0
        # Set when a command succeeds while Redis was thought down: ends the waits.
        self._redis_answers = Event()
        self._redis_dropped = False
        # The shared metadata as this server last read or wrote it, and its version: put
        # back if Redis comes back without it.
        self._redis_meta: dict[str, bytes] = {}
        self._redis_meta_version = 0

    # For a room class mixed in after this one: its history is shared.
    shares_history = True

    # How many times this server took the saver lock: a room class that acts as the saver
    # learns from it that the role was lost and taken again between two looks.
    saver_term = 0

    @property
    def is_saver(self) -> bool:
        """Whether this server holds the room's saver lock (it alone saves and compacts)."""
        # A renewal that gets no answer (Redis or the link hangs) lets the lock expire in
        # Redis, and another server take it: this server stops saving by then.
        return self._redis_holds_lock and current_time() < self._redis_lock_until

    @property
    def last_stream_id(self) -> str:
        """The id of the last entry of the room's stream this server has applied."""
        return self._redis_last_id

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Room]:
        self._redis = self._redis_connection.acquire()
        subscription = self.doc.observe(self._redis_on_update)
        awareness_subscription = self.awareness.observe(self._redis_on_awareness)
        try:
            async with super().__asynccontextmanager__():
                yield self
        finally:
            # Everything the room ran is over, a subclass's last save included: send what
            # is left, then let another server take the lock at once rather than when it
            # expires. Within bounds, since Redis may be away.
            self.doc.unobserve(subscription)
            self.awareness.unobserve(awareness_subscription)
            with CancelScope(shield=True), move_on_after(5):
                try:
                    if not self._redis_dropped:
                        await self._redis_flush()
                except Exception as exc:
                    self.log.warning(
                        "room %r: closed with changes Redis did not get: %s", self.id, exc
                    )
                await self._redis_release_lock()
                await self._redis_connection.release()

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        await self._redis_load()
        self.task_group.start_soon(self._redis_read_loop)
        self.task_group.start_soon(self._redis_write_loop)
        self.task_group.start_soon(self._redis_lock_loop)
        self.task_group.start_soon(self._redis_expiry_loop)
        await super().run(task_status=task_status)

    async def _redis_load(self) -> None:
        """Start from the snapshot and every update after it."""
        await self._redis_catch_up()

    async def _redis_catch_up(self) -> None:
        """Apply what the room's history in Redis has after the last entry this room
        applied: the entries after it, and the snapshot first if a compaction folded in
        entries this room had not read (it is opening, or was cut off from Redis for
        longer than ``compact_grace`` while the saver compacted)."""
        while True:
            cut = await self._redis.hget(self._redis_snapshot_key, "cut")
            behind = cut is not None and _stream_id(cut) > _stream_id(self._redis_last_id)
            start = cut.decode() if behind else self._redis_last_id
            # The snapshot and the entries after its cut are read together: a compaction
            # in between would have trimmed some of those entries.
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hmget(self._redis_snapshot_key, "cut", "update" if behind else "cut")
                pipe.xrange(self._redis_updates_key, min=f"({start}", max="+")
                (now_cut, update), entries = await pipe.execute()
            if now_cut == cut:
                break
            # Compacted (or emptied) meanwhile: the entries may not follow on from the
            # snapshot as read first. Again.
        if behind:
            self._redis_apply(update)
            self._redis_last_id = start
        self._redis_apply_entries(entries)

    def _redis_apply(self, update: bytes) -> None:
        self._redis_applying = True
        try:
            self.doc.apply_update(update)
        finally:
            self._redis_applying = False

    def _redis_apply_entries(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        theirs = []
        for entry_id, fields in entries:
            self._redis_advance(entry_id.decode())
            if fields.get(b"s", b"").decode() != self._redis_sender:
                theirs.append(fields[b"u"])
        if theirs:
            self._redis_apply(theirs[0] if len(theirs) == 1 else merge_updates(*theirs))

    def _redis_advance(self, entry_id: str) -> bool:
        """Note an entry as applied; ``False`` if one as new was already."""
        if _stream_id(entry_id) <= _stream_id(self._redis_last_id):
            return False
        self._redis_last_id = entry_id
        return True

    def _redis_on_update(self, event: TransactionEvent) -> None:
        if not self._redis_applying and event.update != EMPTY_UPDATE:
            outgoing = self._redis_outgoing
            outgoing.append(event.update)
            if len(outgoing) >= _MAX_OUTGOING:
                # Redis is away or slow: keep what waits for it small.
                outgoing[:] = [merge_updates(*outgoing)]
            self._redis_wake.set()

    def _redis_on_awareness(self, topic: str, changes: tuple[dict[str, Any], Any]) -> None:
        change, origin = changes
        if topic != "update":
            return
        if isinstance(origin, _Relayed):
            for client_id in (*change["added"], *change["updated"]):
                self._redis_relayed[client_id] = origin.live_id
            for client_id in change["removed"]:
                self._redis_relayed.pop(client_id, None)
            return
        for client_id in (*change["added"], *change["updated"], *change["removed"]):
            # A client of this server now (it reconnected here), or gone.
            self._redis_relayed.pop(client_id, None)
        if origin == _EXPIRED:
            # Each server comes to this by itself: nothing to tell the others.
            return
        self._redis_outgoing_awareness.update(change["added"], change["updated"], change["removed"])
        self._redis_wake.set()

    def _redis_own_presence(self) -> list[int]:
        """The clients whose presence this server has from its own clients."""
        return [i for i in self.awareness.states if i not in self._redis_relayed]

    def _redis_servers_gone(self, live_ids: set[str]) -> None:
        """Remove the presence relayed by server processes that died."""
        gone = [i for i, live_id in self._redis_relayed.items() if live_id in live_ids]
        if gone:
            self.log.info("room %r: %d client(s) of a server that stopped left", self.id, len(gone))
            self.awareness.remove_awareness_states(gone, _EXPIRED)

    async def _redis_expiry_loop(self) -> None:
        """Remove the presence of other servers' clients that was not renewed in time,
        as y-protocols' awareness does."""
        while True:
            await sleep(self.presence_timeout / 10)
            now = time.time() * 1000
            timeout_ms = self.presence_timeout * 1000
            meta = self.awareness.meta
            states = self.awareness.states
            outdated = [
                client_id
                for client_id in self._redis_relayed
                if client_id in states
                and client_id in meta
                and now - meta[client_id]["lastUpdated"] >= timeout_ms
            ]
            if outdated:
                self.awareness.remove_awareness_states(outdated, _EXPIRED)

    async def _redis_write_loop(self) -> None:
        """Append this server's changes to the streams, merged when they pile up."""
        while True:
            await self._redis_wake.wait()
            self._redis_wake = Event()
            try:
                await self._redis_flush()
            except Exception as exc:
                await self._redis_backoff(exc)
                self._redis_wake.set()
            else:
                self._redis_answered()

    async def _redis_flush(self) -> None:
        if self._redis_outgoing:
            pending, self._redis_outgoing = self._redis_outgoing, []
            update = pending[0] if len(pending) == 1 else merge_updates(*pending)
            try:
                await self._redis_connection.append(
                    keys=[self._redis_updates_key, self._redis_channel],
                    args=[update, self._redis_sender],
                )
            except BaseException:
                # Kept for the next try, ahead of what came while waiting for Redis.
                self._redis_outgoing.insert(0, update)
                raise
        if self._redis_outgoing_awareness:
            ids = sorted(self._redis_outgoing_awareness)
            self._redis_outgoing_awareness.clear()
            try:
                await self._redis_publish(b"a", self.awareness.encode_awareness_update(ids))
            except BaseException:
                self._redis_outgoing_awareness.update(ids)
                raise

    async def _redis_publish(self, kind: bytes, payload: bytes) -> None:
        await self._redis.publish(
            self._redis_channel, kind + self._redis_sender.encode() + b"\n" + payload
        )

    async def _redis_read_loop(self) -> None:
        """Have the other servers' changes applied as the channel brings them."""
        connection = self._redis_connection
        try:
            await connection.add(self)
            # What was appended between loading the room and subscribing.
            await self._redis_catch_up()
            # Others tell their clients' presence again, for this server's clients.
            await self._redis_publish(b"h", b"")
            await connection.read_for(self)
        finally:
            with CancelScope(shield=True), move_on_after(5):
                await connection.remove(self)

    def _redis_receive(self, data: bytes) -> None:
        """Apply a message of the room's channel (read by the server's reader)."""
        kind, rest = data[:1], data[1:]
        sender, _, payload = rest.partition(b"\n")
        ours = sender.decode() == self._redis_sender
        if kind == b"u":
            # This room's own entries count as read too: they come in the stream's
            # order, which the reply to the append (on another connection) may not.
            entry_id, _, update = payload.partition(b" ")
            if self._redis_advance(entry_id.decode()) and not ours:
                self._redis_apply(update)
        elif ours:
            return
        elif kind == b"a":
            origin = _Relayed(_live_id(sender.decode()))
            try:
                self.awareness.apply_awareness_update(payload, origin)
            except Exception as exc:
                self.log.warning("room %r: bad presence from Redis: %s", self.id, exc)
        elif kind == b"h":
            # Each server tells its own clients' presence.
            own = self._redis_own_presence()
            if own:
                self._redis_outgoing_awareness.update(own)
                self._redis_wake.set()

    async def _redis_back(self) -> None:
        """Redis answers again: read what the channel did not bring meanwhile, and give
        Redis what it may lack (it may have restarted empty)."""
        await self._redis_catch_up()
        if self._redis_meta:
            args: list[Any] = [self._redis_meta_version]
            for name, value in self._redis_meta.items():
                args += [name, value]
            await self._redis.eval(_RESTORE_META, 1, self._redis_meta_key, *args)
        # The whole history: applying what one already has changes nothing.
        self._redis_outgoing.append(self.doc.get_update())
        # Presence goes through the channel only: what was published while a server was
        # not subscribed is lost. Tell our clients' again, and ask the others for theirs.
        self._redis_outgoing_awareness.update(self._redis_own_presence())
        await self._redis_publish(b"h", b"")
        self._redis_wake.set()
        self._redis_down = False
        self._redis_failures = 0
        self._redis_connection.report_back(self.log)

    async def _redis_backoff(self, exc: Exception) -> None:
        """Say (once per server) that Redis is unreachable, then wait longer each time."""
        self._redis_down = True
        self._redis_connection.report_down(self.log, exc)
        self._redis_failures += 1
        if self._redis_answers.is_set():
            self._redis_answers = Event()
        with move_on_after(_backoff(self._redis_failures)):
            await self._redis_answers.wait()

    def _redis_answered(self) -> None:
        """A command succeeded: if Redis was thought down, stop waiting to retry."""
        if self._redis_down:
            self._redis_answers.set()

    async def _redis_lock_loop(self) -> None:
        """Take the saver lock when it is free, keep it renewed, compact while holding it."""
        ttl_ms = int(self.lock_ttl * 1000)
        while True:
            sent = current_time()
            try:
                # While the lock is ours, a renewal must be answered before it runs out.
                wait = self._redis_lock_until - sent if self._redis_holds_lock else math.inf
                with move_on_after(wait):
                    ours = await self._redis.eval(
                        _TAKE_OR_RENEW, 1, self._redis_saver_key, self.server_id, ttl_ms
                    )
                    if ours:
                        self._redis_lock_until = sent + self.lock_ttl
                    if ours == 2 and self._redis_holds_lock:
                        # Taken anew: it ran out in Redis before this renewal came, and
                        # another server may have saved meanwhile.
                        self._redis_set_saver(False)
                    self._redis_set_saver(bool(ours))
                if self._redis_holds_lock and current_time() >= self._redis_lock_until:
                    raise TimeoutError("no answer from Redis before the saver lock ran out")
                self._redis_answered()
                if self._redis_holds_lock:
                    await self._redis_compact_if_long()
            except Exception as exc:
                # Without Redis, nobody can be sure to hold the lock.
                self._redis_set_saver(False)
                await self._redis_backoff(exc)
                continue
            await sleep(self.lock_ttl / 3)

    def _redis_set_saver(self, holds: bool) -> None:
        if holds == self._redis_holds_lock:
            return
        self._redis_holds_lock = holds
        if holds:
            self.saver_term += 1
        self.log.info(
            "room %r: %s", self.id, "this server saves the room" if holds else "no longer saves"
        )
        hook = getattr(self, "saver_changed", None)
        if hook is not None:
            hook()

    async def _redis_compact_if_long(self) -> None:
        if await self._redis.xlen(self._redis_updates_key) < self.compact_after:
            return
        await self.compact()

    async def compact(self) -> bool:
        """Fold the stream, up to what this server has read, into the snapshot.

        Entries newer than ``compact_grace`` seconds stay in the stream, so that a server
        a little behind still finds what it has not read yet. Only the saver compacts, and
        only forward: Redis checks, when it runs the compaction, that this server holds the
        saver lock and that the snapshot is not newer than what it would write.

        Returns:
            Whether the stream was compacted.
        """
        cut = self._redis_last_id
        keep_from = _stream_id(cut)
        seconds, microseconds = await self._redis.time()
        time_ms = int(seconds) * 1000 + int(microseconds) // 1000
        grace_ms = time_ms - int(self.compact_grace * 1000)
        if keep_from[0] < grace_ms:
            first_kept = f"{keep_from[0]}-{keep_from[1] + 1}"
        else:
            first_kept = f"{grace_ms}-0"
        done = await self._redis.eval(
            _COMPACT,
            3,
            self._redis_snapshot_key,
            self._redis_updates_key,
            self._redis_saver_key,
            self.server_id,
            self.doc.get_update(),
            cut,
            first_kept,
        )
        if done:
            self.log.debug("room %r: compacted its stream up to %s", self.id, cut)
        return bool(done)

    async def load_shared_meta(self) -> dict[str, bytes] | None:
        """Read the metadata the room class shares between servers.

        Returns:
            Its fields, or ``None`` if no server stored any.
        """
        fields = await self._redis.hgetall(self._redis_meta_key)
        if not fields:
            return None
        meta = {name.decode(): value for name, value in fields.items()}
        version = int(meta.pop("v", b"0"))
        if version >= self._redis_meta_version:
            self._redis_meta, self._redis_meta_version = dict(meta), version
        return meta

    async def store_shared_meta(
        self, fields: Mapping[str, bytes | str], *, expect: str | None = None
    ) -> bool:
        """Set fields of the metadata shared between servers (others are kept).

        Args:
            fields: The fields to set.
            expect: If given, set them only if this server holds the saver lock and the
                shared record of what the file holds (the field ``saved``) is still this:
                Redis checks both as it writes.

        Returns:
            Whether they were set.
        """
        if expect is None:
            args: list[Any] = []
            for name, value in fields.items():
                args += [name, value]
            version = await self._redis.eval(_STORE_META, 1, self._redis_meta_key, *args)
            self._redis_stored(fields, version)
            return True
        return await self._redis_store_as_saver(fields, expect, b"")

    async def share_change(
        self, change: bytes, fields: Mapping[str, bytes | str], *, expect: str | None = None
    ) -> bool:
        """Append a change to the room's stream together with fields of the shared
        metadata, in one write, if this server holds the saver lock and, with ``expect``,
        the shared record of what the file holds is still that (Redis checks both as it
        writes). Changes of this server's that wait for Redis go in the same entry, ahead.
        Apply the change with ``apply_shared`` after: it is not sent again.

        The entry is tagged as if from another opening of the room, so that this room
        applies it too when it reads the stream (it changes nothing if the room has it):
        when Redis took it but its answer was lost, the room gets it all the same.

        Args:
            change: The update.
            fields: The fields to set.
            expect: The shared record of what the file holds, as this server knows it.

        Returns:
            Whether it was written: not if another server holds the lock, or changed the
            record.

        Raises:
            Exception: What the Redis client raised; the entry may have been written.
        """
        pending, self._redis_outgoing = self._redis_outgoing, []
        update = merge_updates(*pending, change) if pending else change
        try:
            written = await self._redis_store_as_saver(fields, expect or "", update)
        except BaseException:
            self._redis_outgoing[:0] = pending
            raise
        if not written:
            self._redis_outgoing[:0] = pending
        return written

    async def _redis_store_as_saver(
        self, fields: Mapping[str, bytes | str], expect: str, update: bytes
    ) -> bool:
        if not self.is_saver:
            return False
        args: list[Any] = [self.server_id, expect, update, f"{self._redis_sender}+"]
        for name, value in fields.items():
            args += [name, value]
        version = await self._redis.eval(
            _STORE_AS_SAVER,
            4,
            self._redis_meta_key,
            self._redis_saver_key,
            self._redis_updates_key,
            self._redis_channel,
            *args,
        )
        if version is None:
            return False
        self._redis_stored(fields, version)
        self._redis_answered()
        return True

    def _redis_stored(self, fields: Mapping[str, bytes | str], version: Any) -> None:
        """Keep what this server stored of the shared metadata, to put it back should
        Redis come back without it."""
        self._redis_meta.update(
            {
                name: value.encode() if isinstance(value, str) else value
                for name, value in fields.items()
            }
        )
        self._redis_meta_version = int(version)

    def apply_shared(self, change: bytes) -> None:
        """Apply a change that ``share_change`` wrote to the stream already."""
        self._redis_apply(change)

    async def drop_shared(self) -> None:
        """Delete the room's history and metadata from Redis (its file was deleted)."""
        self._redis_dropped = True
        self._redis_outgoing.clear()
        self._redis_meta = {}
        await self._redis.delete(
            self._redis_updates_key,
            self._redis_snapshot_key,
            self._redis_meta_key,
        )

    async def _redis_release_lock(self) -> None:
        if not self._redis_holds_lock:
            return
        self._redis_holds_lock = False
        try:
            await self._redis.eval(_RELEASE, 1, self._redis_saver_key, self.server_id)
        except Exception:
            pass


def redis_room_factory(
    url: str,
    room_factory: Callable[..., Room] | type[Room] = Room,
    *,
    prefix: str = DEFAULT_PREFIX,
    server_id: str | None = None,
    **options: Any,
) -> Callable[..., Room]:
    """Make a room factory whose rooms are shared through Redis.

    Args:
        url: The Redis URL (``redis://``, ``rediss://`` for TLS; a password goes in it:
            ``redis://:secret@host:6379/0``).
        room_factory: The room class to share: ``Room`` or a subclass of it.
        prefix: Put before every key, so that several deployments can share one Redis.
        server_id: This server's id (a random one by default).
        options: Further options of [RedisRoom][jupyter_rooms.redis.RedisRoom].

    Returns:
        A ``room_factory`` for ``bind``: it takes a room's id, and any further keyword
        arguments the room class needs.
    """
    _import_redis()
    from redis.asyncio.connection import parse_url

    try:
        # Checked now, not when the first room opens; the message leaves out the password.
        parse_url(url)
    except ValueError as exc:
        raise ValueError(f"not a usable Redis URL: {exc}") from None
    if server_id is not None and "\n" in server_id:
        raise ValueError(f"a server id is one line: {server_id!r}")
    if not (isinstance(room_factory, type) and issubclass(room_factory, Room)):
        raise TypeError("redis_room_factory shares Room classes: pass Room or a subclass of it")
    base: type[Room] = room_factory
    room_class = (
        RedisRoom
        if base is Room
        else type(f"Redis{base.__name__}", (RedisRoom, base), {"__doc__": base.__doc__})
    )
    server = server_id or uuid4().hex
    connection = _Connection(url, prefix)

    def make_room(id: str, **kwargs: Any) -> Room:
        room: Room = room_class(
            id, connection=connection, prefix=prefix, server_id=server, **options, **kwargs
        )
        return room

    return make_room
