"""Rooms shared by several websocket servers through a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from pycrdt import Doc, Map, Text

from jupyter_rooms import ClientWire, bind, connect
from jupyter_rooms.client import ChannelClient
from jupyter_rooms.redis import RedisRoom, redis_room_factory
from jupyter_rooms.room import RoomManager

from faults import Proxy
from helpers import wait_until
from redis_server import RedisServer

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def two_servers(
    redis_server: RedisServer,
) -> AsyncIterator[tuple[Any, Any, ClientWire, ClientWire]]:
    """Two websocket servers sharing rooms through Redis, and a client of room "doc" on
    each: ``(one, two, alice, bob)``."""
    async with (
        bind("websocket", redis_url=redis_server.url) as one,
        bind("websocket", redis_url=redis_server.url) as two,
        connect("websocket", id="doc", port=one.port) as alice,
        connect("websocket", id="doc", port=two.port) as bob,
    ):
        yield one, two, alice, bob


async def test_clients_of_two_servers_converge(redis_server: RedisServer) -> None:
    async with two_servers(redis_server) as (_one, _two, alice, bob):
        alice_text = alice.doc.get("text", type=Text)
        bob_text = bob.doc.get("text", type=Text)
        alice_text += "hello"
        await wait_until(lambda: str(bob_text) == "hello")
        bob.doc.get("map", type=Map)["from"] = "bob"
        bob_text += " world"
        await wait_until(lambda: str(alice_text) == "hello world")
        await wait_until(lambda: alice.doc.get("map", type=Map).to_py() == {"from": "bob"})

        # Concurrent bursts from both sides.
        for _ in range(100):
            alice_text.insert(0, "a")
            bob_text += "b"
        await wait_until(lambda: str(alice_text) == str(bob_text) and len(str(bob_text)) == 211)


async def test_presence_crosses_servers(redis_server: RedisServer) -> None:
    async with two_servers(redis_server) as (one, _two, alice, bob):
        alice.awareness.set_local_state({"user": "alice"})
        await wait_until(lambda: {"user": "alice"} in bob.awareness.states.values())
        async with connect("websocket", id="doc", port=one.port) as carol:
            carol.awareness.set_local_state({"user": "carol"})
            await wait_until(lambda: {"user": "carol"} in bob.awareness.states.values())
        # Carol left: her presence goes from the other server's clients too.
        await wait_until(lambda: {"user": "carol"} not in bob.awareness.states.values())
        assert {"user": "alice"} in bob.awareness.states.values()


async def test_exactly_one_server_saves(redis_server: RedisServer) -> None:
    async with two_servers(redis_server) as (one, two, _, _):
        rooms = [one.room_manager.rooms["doc"], two.room_manager.rooms["doc"]]
        assert all(isinstance(room, RedisRoom) for room in rooms)
        await wait_until(lambda: any(room.is_saver for room in rooms))
        assert sum(room.is_saver for room in rooms) == 1

    # The saver leaves: the other server takes over once the lock expires or is released.
    async with bind("websocket", redis_url=redis_server.url) as three:
        async with connect("websocket", id="doc", port=three.port):
            room = three.room_manager.rooms["doc"]
            await wait_until(lambda: room.is_saver)


async def test_late_server_sees_everything_once(redis_server: RedisServer) -> None:
    async with (
        bind("websocket", redis_url=redis_server.url) as one,
        connect("websocket", id="doc", port=one.port) as alice,
    ):
        text = alice.doc.get("text", type=Text)
        for word in ["one ", "two ", "three "]:
            text += word
        room = one.room_manager.rooms["doc"]
        assert isinstance(room, RedisRoom)
        await wait_until(lambda: room.is_saver)
        # Fold the stream into the snapshot, then edit some more after the cut.
        await room.compact()
        text += "four"
        async with (
            bind("websocket", redis_url=redis_server.url) as two,
            connect("websocket", id="doc", port=two.port) as bob,
        ):
            bob_text = bob.doc.get("text", type=Text)
            await wait_until(lambda: str(bob_text) == "one two three four")


async def test_compaction_keeps_the_stream_short(redis_server: RedisServer) -> None:
    async with (
        bind("websocket", redis_url=redis_server.url) as one,
        connect("websocket", id="doc", port=one.port) as alice,
    ):
        room = one.room_manager.rooms["doc"]
        assert isinstance(room, RedisRoom)
        room.compact_grace = 0
        text = alice.doc.get("text", type=Text)
        for _ in range(50):
            text += "x"
            await anyio.sleep(0.002)
        client = aioredis.from_url(redis_server.url)
        try:
            await wait_until(lambda: room.last_stream_id != "0-0")
            before = await client.xlen("jupyter_rooms:doc:updates")
            await wait_until(lambda: room.is_saver)
            await room.compact()
            after = await client.xlen("jupyter_rooms:doc:updates")
        finally:
            await client.aclose()
        assert before > 1
        assert after < before
    async with (
        bind("websocket", redis_url=redis_server.url) as two,
        connect("websocket", id="doc", port=two.port) as bob,
    ):
        assert str(bob.doc.get("text", type=Text)) == "x" * 50


async def test_redis_restart_while_editing(redis_server: RedisServer) -> None:
    async with two_servers(redis_server) as (one, _two, alice, bob):
        alice_text = alice.doc.get("text", type=Text)
        bob_text = bob.doc.get("text", type=Text)
        alice_text += "before "
        await wait_until(lambda: str(bob_text) == "before ")

        redis_server.stop()
        # Each server keeps its own clients working while Redis is away.
        async with connect("websocket", id="doc", port=one.port) as alice2:
            alice_text += "during "
            await wait_until(lambda: str(alice2.doc.get("text", type=Text)) == "before during ")
        bob_text.insert(0, "[b]")
        await anyio.sleep(0.3)
        redis_server.start()

        expected = "[b]before during "
        await wait_until(lambda: str(alice_text) == expected, within=20)
        await wait_until(lambda: str(bob_text) == expected, within=20)
        alice_text += "after"
        await wait_until(lambda: str(bob_text) == expected + "after")


async def test_prefixes_keep_deployments_apart(redis_server: RedisServer) -> None:
    async with (
        bind("websocket", redis_url=redis_server.url, redis_prefix="one:") as one,
        bind("websocket", redis_url=redis_server.url, redis_prefix="one:") as one_too,
        bind("websocket", redis_url=redis_server.url, redis_prefix="two:") as two,
        connect("websocket", id="doc", port=one.port) as alice,
        connect("websocket", id="doc", port=one_too.port) as bob,
        connect("websocket", id="doc", port=two.port) as eve,
    ):
        alice.doc.get("text", type=Text).insert(0, "for one")
        eve.doc.get("text", type=Text).insert(0, "for two")
        await wait_until(lambda: str(bob.doc.get("text", type=Text)) == "for one")
        assert str(eve.doc.get("text", type=Text)) == "for two"
        client = aioredis.from_url(redis_server.url)
        try:
            keys = {key.decode() for key in await client.keys("*")}
        finally:
            await client.aclose()
        assert keys and all(key.startswith(("one:", "two:")) for key in keys), keys
    assert str(alice.doc.get("text", type=Text)) == "for one"


async def test_tls_and_a_password(tmp_path: Path) -> None:
    secure = RedisServer(tmp_path, password="open sesame", tls=True)
    secure.start()
    try:
        assert secure.url.startswith("rediss://:open sesame@")
        async with (
            bind("websocket", redis_url=secure.url) as one,
            bind("websocket", redis_url=secure.url) as two,
            connect("websocket", id="doc", port=one.port) as alice,
            connect("websocket", id="doc", port=two.port) as bob,
        ):
            alice.doc.get("text", type=Text).insert(0, "over TLS")
            await wait_until(lambda: str(bob.doc.get("text", type=Text)) == "over TLS")
        # With a wrong password, Redis refuses, and so the room does not open.
        wrong = redis_room_factory(secure.url.replace("open sesame", "guess"))
        async with RoomManager(wrong) as manager:
            with pytest.raises(aioredis.AuthenticationError):
                await manager.acquire("doc")
    finally:
        secure.stop()


async def test_a_room_reopened_on_the_same_server_has_its_history(
    redis_server: RedisServer,
) -> None:
    async with bind("websocket", redis_url=redis_server.url) as one:
        async with connect("websocket", id="doc", port=one.port) as alice:
            alice.doc.get("text", type=Text).insert(0, "hello")
            room = one.room_manager.rooms["doc"]
            assert isinstance(room, RedisRoom)
            await wait_until(lambda: room.last_stream_id != "0-0")
        # The last client left: the room closed. What this server sent is in the stream
        # under its id, and the room opening again takes it back.
        await wait_until(lambda: "doc" not in one.room_manager.rooms)
        async with connect("websocket", id="doc", port=one.port) as bob:
            assert str(bob.doc.get("text", type=Text)) == "hello"


def test_a_server_id_is_one_line(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="one line"):
        redis_room_factory(redis_server.url, server_id="a\nb")


def proxied(redis_server: RedisServer) -> tuple[Proxy, str]:
    """A proxy to the Redis server that a test can cut or freeze, and its Redis URL."""
    proxy = Proxy(redis_server.port)
    return proxy, redis_server.url.replace(f":{redis_server.port}/", f":{proxy.port}/")


async def test_a_server_cut_off_during_a_compaction_catches_up(
    redis_server: RedisServer,
) -> None:
    # The second server reaches Redis through a link that is cut while the first one
    # compacts the stream past what the second has read.
    proxy, cut_off_url = proxied(redis_server)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        async with (
            bind("websocket", redis_url=redis_server.url) as one,
            connect("websocket", id="doc", port=one.port) as alice,
        ):
            room = one.room_manager.rooms["doc"]
            assert isinstance(room, RedisRoom)
            await wait_until(lambda: room.is_saver)
            room.compact_grace = 0
            async with (
                bind("websocket", redis_url=cut_off_url) as two,
                connect("websocket", id="doc", port=two.port) as bob,
            ):
                alice_text = alice.doc.get("text", type=Text)
                bob_text = bob.doc.get("text", type=Text)
                alice_text += "before "
                await wait_until(lambda: str(bob_text) == "before ")

                proxy.held = True
                proxy.cut()
                for word in ["while ", "cut ", "off "]:
                    alice_text += word
                    await anyio.sleep(0.01)
                bob_text.insert(0, "[bob] ")
                await wait_until(lambda: room.last_stream_id != "0-0")
                await anyio.sleep(0.2)
                await room.compact()
                proxy.held = False

                expected = "[bob] before while cut off "
                await wait_until(lambda: str(alice_text) == expected, within=20)
                await wait_until(lambda: str(bob_text) == expected, within=20)
                alice_text += "after"
                await wait_until(lambda: str(bob_text) == expected + "after")
        tg.cancel_scope.cancel()


async def test_a_saver_that_gets_no_answer_stops_saving_before_its_lock_expires(
    redis_server: RedisServer,
) -> None:
    # The saver's link to Redis freezes (no error, no answer): its lock runs out in Redis
    # and the other server takes it. The two never both think they save.
    proxy, frozen_url = proxied(redis_server)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        async with (
            RoomManager(redis_room_factory(frozen_url, lock_ttl=1.0)) as first_manager,
            RoomManager(redis_room_factory(redis_server.url, lock_ttl=1.0)) as second_manager,
        ):
            first = await first_manager.acquire("doc")
            assert isinstance(first, RedisRoom)
            await wait_until(lambda: first.is_saver)
            second = await second_manager.acquire("doc")
            assert isinstance(second, RedisRoom)
            tg.start_soon(proxy.stall, 6.0)
            both = 0
            with anyio.move_on_after(5):
                while not second.is_saver:
                    both += first.is_saver and second.is_saver
                    await anyio.sleep(0.005)
            assert second.is_saver
            for _ in range(200):
                both += first.is_saver and second.is_saver
                await anyio.sleep(0.005)
            assert both == 0
            assert not first.is_saver
            first_manager.release("doc")
            second_manager.release("doc")
        tg.cancel_scope.cancel()


@asynccontextmanager
async def saver_and_other(
    redis_server: RedisServer,
) -> AsyncIterator[tuple[RedisRoom, RedisRoom, ClientWire, ClientWire]]:
    """Room "doc" on two websocket servers, the first of which saves it, with a client on
    each: ``(the saver's room, the other's room, alice, bob)``."""
    async with (
        bind("websocket", redis_url=redis_server.url) as one,
        bind("websocket", redis_url=redis_server.url) as two,
        connect("websocket", id="doc", port=one.port) as alice,
    ):
        saver = one.room_manager.rooms["doc"]
        assert isinstance(saver, RedisRoom)
        await wait_until(lambda: saver.is_saver)
        async with connect("websocket", id="doc", port=two.port) as bob:
            other = two.room_manager.rooms["doc"]
            assert isinstance(other, RedisRoom)
            yield saver, other, alice, bob


async def test_only_the_saver_compacts_and_only_forward(redis_server: RedisServer) -> None:
    async with saver_and_other(redis_server) as (saver, other, alice, bob):
        alice.doc.get("text", type=Text).insert(0, "hello")
        await wait_until(lambda: str(bob.doc.get("text", type=Text)) == "hello")
        await wait_until(lambda: other.last_stream_id == saver.last_stream_id != "0-0")
        client = aioredis.from_url(redis_server.url)
        try:
            assert not other.is_saver
            assert not await other.compact()
            assert not await client.exists("jupyter_rooms:doc:snapshot")
            assert await saver.compact()
            cut = await client.hget("jupyter_rooms:doc:snapshot", "cut")
            assert cut == saver.last_stream_id.encode()
            # A saver behind the snapshot (it lags) leaves it as it is.
            saver._redis_last_id = "0-1"
            assert not await saver.compact()
            assert await client.hget("jupyter_rooms:doc:snapshot", "cut") == cut
        finally:
            await client.aclose()


@pytest.mark.parametrize(
    "url", ["http://:secret@127.0.0.1:6379", "127.0.0.1:6379", "redis://:secret@host:port/0"]
)
async def test_a_bad_redis_url_is_refused_at_once(url: str) -> None:
    with pytest.raises(ValueError, match="not a usable Redis URL") as raised:
        bind("websocket", port=0, redis_url=url)
    assert "secret" not in str(raised.value)


async def test_presence_changed_while_redis_is_away_is_sent_once_back(
    redis_server: RedisServer,
) -> None:
    async with two_servers(redis_server) as (one, _two, alice, bob):
        room = one.room_manager.rooms["doc"]
        assert isinstance(room, RedisRoom)
        alice.awareness.set_local_state({"cursor": -1})
        await wait_until(lambda: {"cursor": -1} in bob.awareness.states.values())
        redis_server.stop()
        # A cursor that keeps moving: what waits for Redis is its latest place only.
        for position in range(300):
            alice.awareness.set_local_state({"cursor": position})
            await anyio.sleep(0.002)
        await wait_until(lambda: len(room._redis_outgoing_awareness) == 1)
        redis_server.start()
        await wait_until(lambda: {"cursor": 299} in bob.awareness.states.values(), within=20)
        assert not any(state.get("cursor", 299) != 299 for state in bob.awareness.states.values())


async def test_presence_of_another_server_not_renewed_in_time_goes(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with two_servers(redis_server) as (one, two, alice, bob):
        alice.presence_renewal = 3600
        room = two.room_manager.rooms["doc"]
        assert isinstance(room, RedisRoom)
        room.presence_timeout = 1.0
        # Bob is a client of that server: only others' presence times out there.
        bob.awareness.set_local_state({"user": "bob"})
        monkeypatch.setattr(ChannelClient, "presence_renewal", 0.2)
        async with connect("websocket", id="doc", port=one.port) as carol:
            alice.awareness.set_local_state({"user": "alice"})
            carol.awareness.set_local_state({"user": "carol"})
            await wait_until(lambda: {"user": "alice"} in bob.awareness.states.values())
            await wait_until(lambda: {"user": "carol"} in bob.awareness.states.values())
            # Alice does not renew hers within the timeout (15 s by default); Carol does.
            await wait_until(lambda: {"user": "alice"} not in bob.awareness.states.values())
            await anyio.sleep(1.5)
            assert {"user": "carol"} in bob.awareness.states.values()
            assert {"user": "bob"} in carol.awareness.states.values()
            # A renewal brings Alice back.
            alice.awareness.set_local_state(alice.awareness.get_local_state())
            await wait_until(lambda: {"user": "alice"} in bob.awareness.states.values())


async def test_a_client_renews_its_presence(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ChannelClient, "presence_renewal", 0.1)
    async with two_servers(redis_server) as (one, _two, alice, _bob):
        room = one.room_manager.rooms["doc"]
        alice.awareness.set_local_state({"user": "alice"})
        own = alice.awareness.client_id
        await wait_until(lambda: own in room.awareness.meta)
        clock = room.awareness.meta[own]["clock"]
        await wait_until(lambda: room.awareness.meta[own]["clock"] >= clock + 3)
        assert room.awareness.states[own] == {"user": "alice"}


async def test_the_savers_writes_are_refused_over_a_record_that_changed(
    redis_server: RedisServer,
) -> None:
    # A saver writes the record of what the file holds, and a change merged from the
    # file with it, only over the record it knows and while it holds the lock: a server
    # whose role ran out and came back while another saved must not write from what it
    # knew before, nor may a server that is not the saver.
    async with saver_and_other(redis_server) as (saver, other, _, bob):
        client = aioredis.from_url(redis_server.url)
        try:
            assert await saver.store_shared_meta({"saved": "first"})
            assert await saver.store_shared_meta({"saved": "second"}, expect="first")
            merged: Doc = Doc()
            merged.get("map", type=Map)["merged"] = True
            update = merged.get_update()
            entries = await client.xlen("jupyter_rooms:doc:updates")
            # Another server changed the record since this one knew it.
            assert not await saver.store_shared_meta({"saved": "third"}, expect="first")
            assert not await saver.share_change(update, {"saved": "third"}, expect="first")
            # Not the saver.
            assert not await other.store_shared_meta({"saved": "third"}, expect="second")
            assert not await other.share_change(update, {"saved": "third"}, expect="second")
            assert await client.hget("jupyter_rooms:doc:meta", "saved") == b"second"
            assert await client.xlen("jupyter_rooms:doc:updates") == entries
            assert "merged" not in bob.doc.get("map", type=Map).to_py()
            # Over the record it knows, as the saver: the change and the record go
            # together, and every server gets the change.
            assert await saver.share_change(update, {"saved": "third"}, expect="second")
            saver.apply_shared(update)
            assert await client.hget("jupyter_rooms:doc:meta", "saved") == b"third"
            await wait_until(lambda: bob.doc.get("map", type=Map).to_py() == {"merged": True})
        finally:
            await client.aclose()


async def test_a_lock_that_ran_out_and_was_taken_again_starts_a_new_term(
    redis_server: RedisServer,
) -> None:
    # The saver's renewal came after its lock ran out in Redis (the server stalled), and
    # took the free lock again: another server may have saved in between, so a room
    # class acting as the saver must learn that this is a new term, and read the shared
    # record again, rather than go on from what it knew.
    factory = redis_room_factory(redis_server.url, lock_ttl=1.0)
    async with (
        bind("websocket", room_factory=factory) as one,
        connect("websocket", id="doc", port=one.port),
    ):
        saver = one.room_manager.rooms["doc"]
        assert isinstance(saver, RedisRoom)
        await wait_until(lambda: saver.is_saver)
        term = saver.saver_term
        client = aioredis.from_url(redis_server.url)
        try:
            # As if it had run out.
            assert await client.delete("jupyter_rooms:doc:saver") == 1
            await wait_until(lambda: saver.saver_term == term + 1, within=5)
            assert saver.is_saver
            assert await client.get("jupyter_rooms:doc:saver") == saver.server_id.encode()
        finally:
            await client.aclose()
