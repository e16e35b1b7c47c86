"""A server that stops under its clients stops promptly; the clients keep their edits and
bring them to the server that comes back."""

from __future__ import annotations

import anyio
import pytest
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from jupyter_rooms import ServerWire, bind, connect

from helpers import content, other_tasks, roots, settle

pytestmark = pytest.mark.anyio


async def run_server(
    stop: anyio.Event,
    stopped: anyio.Event,
    port: int = 0,
    *,
    task_status: TaskStatus[ServerWire] = TASK_STATUS_IGNORED,
) -> None:
    async with bind("websocket", host="127.0.0.1", port=port) as server:
        task_status.started(server)
        await stop.wait()
    stopped.set()


async def test_clients_outlive_a_server_restart_and_merge_what_they_did_meanwhile() -> None:
    baseline = other_tasks()
    async with anyio.create_task_group() as tg:
        stop, stopped = anyio.Event(), anyio.Event()
        server = await tg.start(run_server, stop, stopped)
        port = server.port  # type: ignore[attr-defined]
        statuses: list[str] = []
        async with (
            connect("websocket", id="r", port=port, max_backoff=0.2) as alice,
            connect("websocket", id="r", port=port, max_backoff=0.2) as bob,
        ):
            alice.on_status(lambda status, details: statuses.append(status))  # type: ignore[attr-defined]
            roots(alice.doc)[0].insert(0, "before")
            await settle(lambda: str(roots(bob.doc)[0]) == "before")
            assert str(roots(bob.doc)[0]) == "before"

            # The server stops with clients connected, and promptly.
            with anyio.fail_after(5):
                stop.set()
                await stopped.wait()
            await settle(lambda: not alice.connected and not bob.connected)  # type: ignore[attr-defined]
            assert "disconnected" in statuses

            # Both go on editing while it is away.
            roots(alice.doc)[0].insert(6, " alice")
            roots(bob.doc)[1]["bob"] = "was here"

            # A new server, empty, on the same port: the clients find it and fill it.
            stop = anyio.Event()
            server = await tg.start(run_server, stop, anyio.Event(), port)
            await settle(lambda: "r" in server.room_manager.rooms)
            room = server.room_manager.rooms["r"]
            await settle(lambda: content(alice.doc) == content(bob.doc) == content(room.doc))
            assert content(room.doc)["text"] == "before alice"
            assert content(room.doc)["map"] == {"bob": "was here"}
            assert content(alice.doc) == content(bob.doc) == content(room.doc)
            assert statuses[-1] == "synchronized"
            stop.set()
    await settle(lambda: not (other_tasks() - baseline), timeout=2)
    assert other_tasks() - baseline == set()


async def test_leaving_while_the_server_is_away_is_prompt() -> None:
    async with anyio.create_task_group() as tg:
        stop = anyio.Event()
        server = await tg.start(run_server, stop, anyio.Event())
        with anyio.fail_after(5):
            async with connect("websocket", id="r", port=server.port) as client:  # type: ignore[attr-defined]
                stop.set()
                await settle(lambda: not client.connected)  # type: ignore[attr-defined]
                roots(client.doc)[0].insert(0, "nobody will see this")
                assert not client.connected  # type: ignore[attr-defined]
