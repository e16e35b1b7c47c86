"""Rooms shared by several servers through Redis.

Each room has a Redis stream of updates that every server with the room open appends
its own clients' changes to and reads the others' from, a second, capped stream for
presence, a snapshot that stands for the stream's compacted past, and a lock with
expiry that names the one server allowed to save and compact the room. A server that
opens a room late loads the snapshot and the stream after it, so it starts from the
same history as the others and duplicates nothing.

Keys, for a room ``ID`` and the prefix ``P`` (default ``jupyter_rooms:``):
``P{ID}:updates`` (stream: fields ``u`` the update, ``s`` the sending server),
``P{ID}:awareness`` (stream: ``a`` an awareness update, ``s``), ``P{ID}:snapshot``
(hash: ``update`` and ``cut``, the last stream id it includes), ``P{ID}:saver`` (the
saving server's id, with an expiry).

Turn it on with ``redis_room_factory(url)`` as a server's ``room_factory`` (the
websocket wire does it for ``bind("websocket", redis_url=...)``, the Jupyter extension
for its ``redis_url`` setting). It needs the ``redis`` package:
``pip install jupyter_rooms[redis]``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any
from uuid import uuid4

from anyio import TASK_STATUS_IGNORED, CancelScope, Event, move_on_after, sleep
from anyio.abc import TaskStatus
from pycrdt import TransactionEvent, merge_updates

from .protocol import EMPTY_UPDATE
from .room import Room

__all__ = ["RedisRoom", "redis_room_factory"]

log = logging.getLogger("jupyter_rooms.redis")

DEFAULT_PREFIX = "jupyter_rooms:"

# Extend the saver lock only while it is still ours.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
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
    """One Redis client shared by the rooms of a server, closed with the last of them."""

    def __init__(self, url: str) -> None:
        self.url = url
        # A redis.asyncio.Redis; typed loosely since redis is an optional dependency.
        self.client: Any = None
        self.users = 0

    def acquire(self) -> Any:
        if self.client is None:
            self.client = _import_redis().from_url(self.url)
        self.users += 1
        return self.client

    async def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.client is not None:
            client, self.client = self.client, None
            await client.aclose()


class RedisRoom(Room):
    """A room whose document and presence are shared with the same room on other servers.

    Use [redis_room_factory][jupyter_rooms.redis.redis_room_factory] to make one; it can
    also be combined with another ``Room`` subclass, whose ``run`` then starts from the
    history loaded from Redis.

    Args:
        id: The room's id.
        connection: The server's shared Redis connection.
        prefix: Put before every key, so that several deployments can share one Redis.
        server_id: This server's id in the streams and the saver lock.
        lock_ttl: Seconds the saver lock lasts unless renewed (it is renewed at a third).
        compact_after: Compact the stream into the snapshot when it has this many entries.
        compact_grace: Seconds of stream kept after a compaction, for servers that lag.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(id, **kwargs)
        self._connection = connection
        self.server_id = server_id or uuid4().hex
        self.lock_ttl = lock_ttl
        self.compact_after = compact_after
        self.compact_grace = compact_grace
        key = f"{prefix}{id}"
        self._updates_key = f"{key}:updates"
        self._awareness_key = f"{key}:awareness"
        self._snapshot_key = f"{key}:snapshot"
        self._saver_key = f"{key}:saver"
        self._last_id = "0-0"
        self._from_redis = False
        self._outgoing: list[bytes] = []
        self._outgoing_awareness: list[bytes] = []
        self._wake = Event()
        self._redis: Any = None
        self._holds_lock = False
        self._reported_down = False

    @property
    def is_saver(self) -> bool:
        """Whether this server holds the room's saver lock (it alone saves and compacts)."""
        return self._holds_lock

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        self._redis = self._connection.acquire()
        try:
            await self._load()
            subscription = self.doc.observe(self._on_update)
            awareness_subscription = self.awareness.observe(self._on_awareness)
            try:
                self.task_group.start_soon(self._read_loop)
                self.task_group.start_soon(self._write_loop)
                self.task_group.start_soon(self._lock_loop)
                await super().run(task_status=task_status)
            finally:
                self.doc.unobserve(subscription)
                self.awareness.unobserve(awareness_subscription)
        finally:
            # The room is closing, often by cancellation: let others take the lock now
            # rather than when it expires, and close the connection, within bounds.
            with CancelScope(shield=True), move_on_after(5):
                await self._release_lock()
                await self._connection.release()

    async def _load(self) -> None:
        """Start from the snapshot and every update after it."""
        assert self._redis is not None
        snapshot = await self._redis.hgetall(self._snapshot_key)
        start = "-"
        if snapshot:
            self._apply_from_redis(snapshot[b"update"])
            cut = snapshot[b"cut"].decode()
            self._last_id = cut
            start = f"({cut}"
        entries = await self._redis.xrange(self._updates_key, min=start, max="+")
        self._apply_entries(entries)

    def _apply_from_redis(self, update: bytes) -> None:
        self._from_redis = True
        try:
            self.doc.apply_update(update)
        finally:
            self._from_redis = False

    def _apply_entries(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        theirs = []
        for entry_id, fields in entries:
            self._last_id = entry_id.decode()
            if fields.get(b"s", b"").decode() != self.server_id:
                theirs.append(fields[b"u"])
        if theirs:
            self._apply_from_redis(theirs[0] if len(theirs) == 1 else merge_updates(*theirs))

    def _on_update(self, event: TransactionEvent) -> None:
        if not self._from_redis and event.update != EMPTY_UPDATE:
            self._outgoing.append(event.update)
            self._wake.set()

    def _on_awareness(self, topic: str, changes: tuple[dict[str, Any], Any]) -> None:
        change, origin = changes
        if topic != "update" or origin == "redis":
            return
        ids = change["added"] + change["updated"] + change["removed"]
        self._outgoing_awareness.append(self.awareness.encode_awareness_update(ids))
        self._wake.set()

    async def _write_loop(self) -> None:
        """Append this server's changes to the streams, merged when they pile up."""
        assert self._redis is not None
        while True:
            await self._wake.wait()
            self._wake = Event()
            try:
                await self._flush()
            except Exception as exc:
                self._report_down(exc)
                await sleep(0.5 + random.random())
                self._wake.set()

    async def _flush(self) -> None:
        assert self._redis is not None
        if self._outgoing:
            count = len(self._outgoing)
            update = merge_updates(*self._outgoing)
            await self._redis.xadd(self._updates_key, {"u": update, "s": self.server_id})
            # Only once it is in Redis (a failure keeps it for the next try), and only
            # what was sent: more may have come while waiting for Redis.
            del self._outgoing[:count]
        while self._outgoing_awareness:
            message = self._outgoing_awareness[0]
            await self._redis.xadd(
                self._awareness_key,
                {"a": message, "s": self.server_id},
                maxlen=1000,
                approximate=True,
            )
            self._outgoing_awareness.pop(0)

    async def _read_loop(self) -> None:
        """Apply the other servers' changes as they arrive in the streams."""
        assert self._redis is not None
        newest = await self._redis.xrevrange(self._awareness_key, count=1)
        awareness_id = newest[0][0].decode() if newest else "0-0"
        while True:
            try:
                reply = await self._redis.xread(
                    {self._updates_key: self._last_id, self._awareness_key: awareness_id},
                    block=2000,
                    count=1000,
                )
            except Exception as exc:
                self._report_down(exc)
                await sleep(0.5 + random.random())
                continue
            if self._reported_down:
                self._reported_down = False
                log.info("room %r: Redis is back", self.id)
                # Redis may have restarted empty: give it the whole history again
                # (applying what one already has changes nothing).
                self._outgoing.append(self.doc.get_update())
                self._wake.set()
            for key, entries in reply or []:
                if key.decode() == self._updates_key:
                    self._apply_entries(entries)
                    continue
                for entry_id, fields in entries:
                    awareness_id = entry_id.decode()
                    if fields.get(b"s", b"").decode() != self.server_id:
                        try:
                            self.awareness.apply_awareness_update(fields[b"a"], "redis")
                        except Exception as exc:
                            log.warning("room %r: bad presence entry in Redis: %s", self.id, exc)

    def _report_down(self, exc: Exception) -> None:
        if not self._reported_down:
            self._reported_down = True
            log.warning(
                "room %r: Redis is unreachable (%s); clients of this server keep working, "
                "their changes are sent when it is back",
                self.id,
                exc,
            )

    async def _lock_loop(self) -> None:
        """Take the saver lock when it is free, keep it renewed, compact while holding it."""
        assert self._redis is not None
        ttl_ms = int(self.lock_ttl * 1000)
        while True:
            try:
                if self._holds_lock:
                    self._holds_lock = bool(
                        await self._redis.eval(_RENEW, 1, self._saver_key, self.server_id, ttl_ms)
                    )
                if not self._holds_lock:
                    self._holds_lock = bool(
                        await self._redis.set(self._saver_key, self.server_id, nx=True, px=ttl_ms)
                    )
                    if self._holds_lock:
                        log.info("room %r: this server saves the room", self.id)
                if self._holds_lock:
                    await self._compact_if_long()
            except Exception as exc:
                # Without Redis, nobody can be sure to hold the lock.
                self._holds_lock = False
                self._report_down(exc)
            await sleep(self.lock_ttl / 3)

    async def _compact_if_long(self) -> None:
        assert self._redis is not None
        if await self._redis.xlen(self._updates_key) < self.compact_after:
            return
        await self.compact()

    async def compact(self) -> None:
        """Fold the stream, up to what this server has read, into the snapshot.

        Entries newer than ``compact_grace`` seconds stay in the stream, so that a server
        a little behind still finds what it has not read yet.
        """
        assert self._redis is not None
        cut = self._last_id
        keep_from = _stream_id(cut)
        seconds, microseconds = await self._redis.time()
        time_ms = int(seconds) * 1000 + int(microseconds) // 1000
        grace_ms = time_ms - int(self.compact_grace * 1000)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._snapshot_key, mapping={"update": self.doc.get_update(), "cut": cut})
            if keep_from[0] < grace_ms:
                pipe.xtrim(
                    self._updates_key,
                    minid=f"{keep_from[0]}-{keep_from[1] + 1}",
                    approximate=False,
                )
            else:
                pipe.xtrim(self._updates_key, minid=f"{grace_ms}-0", approximate=False)
            await pipe.execute()
        log.debug("room %r: compacted its stream up to %s", self.id, cut)

    async def _release_lock(self) -> None:
        if not self._holds_lock or self._redis is None:
            return
        self._holds_lock = False
        try:
            await self._redis.eval(_RENEW, 1, self._saver_key, self.server_id, 1)
        except Exception:
            pass


def redis_room_factory(
    url: str,
    room_factory: Callable[[str], Room] | type[Room] = Room,
    *,
    prefix: str = DEFAULT_PREFIX,
    server_id: str | None = None,
    **options: Any,
) -> Callable[[str], Room]:
    """Make a room factory whose rooms are shared through Redis.

    Args:
        url: The Redis URL (``redis://``, ``rediss://`` for TLS; a password goes in it:
            ``redis://:secret@host:6379/0``).
        room_factory: The room class to share: ``Room`` or a subclass of it.
        prefix: Put before every key, so that several deployments can share one Redis.
        server_id: This server's id (a random one by default).
        options: Further options of [RedisRoom][jupyter_rooms.redis.RedisRoom].

    Returns:
        A ``room_factory`` for ``bind``.
    """
    _import_redis()
    if not (isinstance(room_factory, type) and issubclass(room_factory, Room)):
        raise TypeError("redis_room_factory shares Room classes: pass Room or a subclass of it")
    base: type[Room] = room_factory
    room_class = (
        RedisRoom
        if base is Room
        else type(f"Redis{base.__name__}", (RedisRoom, base), {"__doc__": base.__doc__})
    )
    connection = _Connection(url)
    server = server_id or uuid4().hex

    def make_room(id: str) -> Room:
        room: Room = room_class(
            id, connection=connection, prefix=prefix, server_id=server, **options
        )
        return room

    return make_room
