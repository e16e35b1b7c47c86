"""Clients editing one room at once end with the same document as each other and the room."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import anyio
import pytest
from pycrdt import Doc

from jupyter_rooms import connect

from helpers import content, edit_randomly, roots, serving, settle

pytestmark = pytest.mark.anyio

EDITS_PER_CLIENT = 150


@pytest.mark.parametrize("wire", ["memory", "websocket"])
@pytest.mark.parametrize("clients", [1, 2, 5, 10])
async def test_concurrent_random_edits_converge(wire: str, clients: int) -> None:
    markers = {f"done-{i}" for i in range(clients)}
    async with serving(wire) as (server, options), AsyncExitStack() as stack:
        docs = [
            (await stack.enter_async_context(connect(wire, id="shared", **options))).doc
            for _ in range(clients)
        ]
        room = server.room_manager.rooms["shared"]
        async with anyio.create_task_group() as tg:
            for i, doc in enumerate(docs):
                tg.start_soon(edit_randomly, doc, 1000 * clients + i, EDITS_PER_CLIENT, f"done-{i}")

        everyone = [room.doc, *docs]
        await settle(
            lambda: (
                all(markers <= set(roots(doc)[1].keys()) for doc in everyone)
                and all(content(doc) == content(room.doc) for doc in docs)
            )
        )
        expected = content(room.doc)
        assert markers <= set(expected["map"])
        assert expected["text"] and expected["array"]
        for doc in docs:
            assert content(doc) == expected

        # Someone joining afterwards starts from the same document.
        async with connect(wire, id="shared", **options) as late:
            assert content(late.doc) == expected


@pytest.mark.parametrize("wire", ["memory", "websocket"])
async def test_edits_made_before_joining_are_merged(wire: str) -> None:
    async with serving(wire) as (server, options):
        async with connect(wire, id="notes", **options) as first:
            roots(first.doc)[0].insert(0, "online")
            offline = Doc()
            roots(offline)[0].insert(0, "offline ")
            async with connect(wire, id="notes", doc=offline, **options) as second:
                assert second.doc is offline
                room = server.room_manager.rooms["notes"]
                await settle(lambda: str(roots(first.doc)[0]) == str(roots(offline)[0]))
                merged = str(roots(room.doc)[0])
                assert merged in ("offline online", "onlineoffline ")
                assert str(roots(first.doc)[0]) == merged == str(roots(offline)[0])


@pytest.mark.parametrize("wire", ["memory", "websocket"])
async def test_an_edit_made_on_joining_arrives_promptly(wire: str) -> None:
    # Someone joins and types at once while another watches: the edit follows the
    # handshake's messages without waiting on the transport.
    joins = 7
    async with serving(wire) as (_, options), connect(wire, id="t", **options) as watcher:
        seen = roots(watcher.doc)[0]
        delays = []
        for i in range(joins):
            async with connect(wire, id="t", **options) as typist:
                started = time.monotonic()
                roots(typist.doc)[0].insert(0, "x")
                expected = "x" * (i + 1)
                await settle(lambda: str(seen) == expected, timeout=2)  # noqa: B023
                delays.append(time.monotonic() - started)
                assert str(seen) == expected
    assert str(seen) == "x" * joins
    # The median, so that one hiccup of a busy machine does not count; a transport delay
    # (tens of milliseconds) shows on every join.
    assert sorted(delays)[joins // 2] < 0.02, f"edits took {delays} s to arrive"
