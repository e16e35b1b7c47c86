"""Presence: what a client sets in its awareness reaches the others, and goes when it does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from pycrdt import Awareness, Doc

from jupyter_rooms import Room, connect
from jupyter_rooms.channel import memory_channel_pair
from jupyter_rooms.protocol import awareness_message

from faults import Proxy
from helpers import serving, settle, wait_until

pytestmark = pytest.mark.anyio

WIRES = ["memory", "websocket"]


@pytest.mark.parametrize("wire", WIRES)
async def test_presence_reaches_others_and_leaves_with_its_client(wire: str) -> None:
    async with (
        serving(wire) as (server, options),
        connect(wire, id="p", **options) as bob,
        connect(wire, id="p", **options) as carol,
    ):
        async with connect(wire, id="p", **options) as alice:
            alice_id = alice.awareness.client_id
            alice.awareness.set_local_state({"user": "alice", "cursor": 3})
            await settle(lambda: all(alice_id in c.awareness.states for c in (bob, carol)))
            for client in (bob, carol):
                assert client.awareness.states[alice_id] == {"user": "alice", "cursor": 3}

            # Changes follow, and someone arriving later sees the current state at once.
            alice.awareness.set_local_state({"user": "alice", "cursor": 9})
            await settle(lambda: bob.awareness.states[alice_id]["cursor"] == 9)
            assert bob.awareness.states[alice_id]["cursor"] == 9
            async with connect(wire, id="p", **options) as dave:
                await settle(lambda: alice_id in dave.awareness.states)
                assert dave.awareness.states[alice_id] == {"user": "alice", "cursor": 9}
            # Someone in another room sees nothing of it.
            async with connect(wire, id="elsewhere", **options) as eve:
                assert alice_id not in eve.awareness.states

        await settle(lambda: all(alice_id not in c.awareness.states for c in (bob, carol)))
        for client in (bob, carol):
            assert alice_id not in client.awareness.states
        assert alice_id not in server.room_manager.rooms["p"].awareness.states


@pytest.mark.parametrize("wire", WIRES)
async def test_presence_goes_when_a_client_vanishes_without_goodbye(wire: str) -> None:
    async with (
        serving(wire) as (server, options),
        connect(wire, id="p", **options) as bob,
    ):
        with anyio.CancelScope() as scope:
            async with connect(wire, id="p", **options) as alice:
                alice_id = alice.awareness.client_id
                alice.awareness.set_local_state({"user": "alice"})
                await settle(lambda: alice_id in bob.awareness.states)
                assert bob.awareness.states[alice_id] == {"user": "alice"}
                # Cancelled: no chance to clear its presence; the room clears it.
                scope.cancel()
                await anyio.sleep_forever()
        await settle(lambda: alice_id not in bob.awareness.states)
        assert alice_id not in bob.awareness.states
        assert alice_id not in server.room_manager.rooms["p"].awareness.states


@pytest.mark.parametrize("wire", WIRES)
async def test_presence_set_before_joining_is_announced(wire: str) -> None:
    async with serving(wire) as (_, options), connect(wire, id="p", **options) as bob:
        alice = connect(wire, id="p", **options)
        alice.awareness.set_local_state({"user": "alice"})
        async with alice:
            await settle(lambda: alice.awareness.client_id in bob.awareness.states)
            assert bob.awareness.states[alice.awareness.client_id] == {"user": "alice"}
            # Others' presence reaches the newcomer too.
            bob.awareness.set_local_state({"user": "bob"})
            await settle(lambda: bob.awareness.client_id in alice.awareness.states)
            assert alice.awareness.states[bob.awareness.client_id] == {"user": "bob"}


@asynccontextmanager
async def one_client_behind_a_proxy() -> AsyncIterator[tuple[Proxy, Any, Any, dict[str, Any]]]:
    """A websocket server, a client of room ``p`` straight to it and one through a
    proxy the test can cut; yields the proxy, both clients and the server's options."""
    async with (
        serving("websocket") as (_, options),
        anyio.create_task_group() as tg,
    ):
        proxy = Proxy(options["port"])
        await tg.start(proxy.serve)
        async with (
            connect("websocket", id="p", **options) as direct,
            connect(
                "websocket", id="p", host="127.0.0.1", port=proxy.port, max_backoff=0.1
            ) as proxied,
        ):
            yield proxy, direct, proxied, options
        tg.cancel_scope.cancel()


async def test_presence_comes_back_after_a_dropped_connection() -> None:
    # The room drops bob's presence with his connection; bob's next connection brings it
    # back, though bob did not change it.
    async with one_client_behind_a_proxy() as (proxy, alice, bob, _):
        bob_id = bob.awareness.client_id
        bob.awareness.set_local_state({"user": "bob"})
        await wait_until(lambda: bob_id in alice.awareness.states)
        proxy.held = True
        proxy.cut()
        await wait_until(lambda: bob_id not in alice.awareness.states)
        proxy.held = False
        await wait_until(lambda: bob_id in alice.awareness.states)
        assert alice.awareness.states[bob_id] == {"user": "bob"}


async def test_a_disconnected_client_shows_nobody_and_finds_who_is_there_on_return() -> None:
    # Nobody can tell a disconnected client who leaves meanwhile: it forgets everyone,
    # and its next connection brings back those still there (under the clocks it knew).
    async with one_client_behind_a_proxy() as (proxy, carol, alice, options):
        carol.awareness.set_local_state({"user": "carol"})
        carol_id = carol.awareness.client_id
        async with connect("websocket", id="p", **options) as bob:
            bob.awareness.set_local_state({"user": "bob"})
            bob_id = bob.awareness.client_id
            await wait_until(lambda: {bob_id, carol_id} <= set(alice.awareness.states))
            proxy.held = True
            proxy.cut()
            await wait_until(lambda: not alice.connected)
            assert set(alice.awareness.states) == {alice.awareness.client_id}
        proxy.held = False
        await wait_until(lambda: carol_id in alice.awareness.states)
        assert alice.awareness.states[carol_id] == {"user": "carol"}
        assert bob_id not in alice.awareness.states


async def test_an_old_connection_closing_late_leaves_the_new_ones_presence() -> None:
    # A client reconnects before the room sees its old connection close: the old one's
    # end must not take away the presence the new one announced.
    bob = Awareness(Doc())
    bob.set_local_state({"user": "bob"})
    old_client, old_server = memory_channel_pair("p")
    new_client, new_server = memory_channel_pair("p")
    async with Room("p") as room:
        await room.task_group.start(room.run)
        await room.task_group.start(room.serve, old_server)
        await old_client.send(awareness_message(bob.encode_awareness_update([bob.client_id])))
        await wait_until(lambda: bob.client_id in room.awareness.states)
        await room.task_group.start(room.serve, new_server)
        bob.set_local_state({"user": "bob"})
        await new_client.send(awareness_message(bob.encode_awareness_update([bob.client_id])))
        await wait_until(lambda: room.awareness.meta[bob.client_id]["clock"] == 2)
        await old_client.close()
        await wait_until(lambda: room.client_count == 1)
        assert room.awareness.states.get(bob.client_id) == {"user": "bob"}
        room.task_group.cancel_scope.cancel()
