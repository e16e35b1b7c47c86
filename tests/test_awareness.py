"""Presence: what a client sets in its awareness reaches the others, and goes when it does."""

from __future__ import annotations

import anyio
import pytest

from jupyter_rooms import connect

from helpers import serving, settle

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
