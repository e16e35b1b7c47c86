"""A server that stops under its clients stops promptly; the clients keep their edits and
bring them to the server that comes back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from jupyter_rooms import ChannelClient, ServerWire, bind, connect
from jupyter_rooms.channel import MemoryChannel, memory_channel_pair
from jupyter_rooms.protocol import sync_step2

from helpers import capture_logs, content, other_tasks, roots, settle

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


async def test_leaving_while_the_server_is_away_waits_only_for_undelivered_edits() -> None:
    async with anyio.create_task_group() as tg:
        stop = anyio.Event()
        server = await tg.start(run_server, stop, anyio.Event())
        port = server.port  # type: ignore[attr-defined]
        idle = connect("websocket", id="r", port=port)
        busy = connect("websocket", id="r", port=port, timeout=1)
        with anyio.fail_after(5):
            await idle.__aenter__()
            await busy.__aenter__()
            stop.set()
            await settle(lambda: not idle.connected and not busy.connected)  # type: ignore[attr-defined]
            roots(busy.doc)[0].insert(0, "nobody will see this")
            with capture_logs("jupyter_rooms.client") as logs:
                # An edit no server has: leaving waits for a server, up to the client's
                # timeout, and says what it could not deliver.
                started = anyio.current_time()
                await busy.__aexit__(None, None, None)
                assert 0.9 < anyio.current_time() - started < 3
                # Nothing pending: leaving is prompt.
                started = anyio.current_time()
                await idle.__aexit__(None, None, None)
                assert anyio.current_time() - started < 0.5
            assert any("could not deliver" in message for message in logs.messages())


class ScriptedClient(ChannelClient):
    """A client whose 'server' is the test, at the other end of a memory channel."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server_ends: list[MemoryChannel] = []

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[MemoryChannel]:
        client_end, server_end = memory_channel_pair(self.id)
        self.server_ends.append(server_end)
        yield client_end


async def test_a_server_that_sends_garbage_is_left_for_good() -> None:
    client = ScriptedClient(id="r", max_backoff=0.05, timeout=5)
    statuses: list[tuple[str, dict[str, Any]]] = []
    client.on_status(lambda status, details: statuses.append((status, details)))

    async def play_server() -> None:
        await settle(lambda: bool(client.server_ends))
        # Finish the handshake as a server would, then send a malformed update.
        await client.server_ends[0].send(sync_step2(b"\x00\x00"))
        await client.server_ends[0].send(b"\x00\x02\x05\x01\x02")

    async with anyio.create_task_group() as tg:
        tg.start_soon(play_server)
        async with client:
            await settle(lambda: not client.connected)
            assert client.close_code == 1002
            assert "malformed" in client.close_reason
            await anyio.sleep(0.3)
            # Reconnecting would only meet the same server again.
            assert len(client.server_ends) == 1
    assert ("disconnected", {"code": 1002, "reason": client.close_reason}) in statuses


class HangingClient(ChannelClient):
    """A client whose server accepts the connection and never finishes opening it."""

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[MemoryChannel]:
        await anyio.sleep_forever()
        yield memory_channel_pair(self.id)[0]  # pragma: no cover


async def test_a_timeout_says_what_it_waited_for() -> None:
    # A server that never opens the connection.
    with anyio.fail_after(5), pytest.raises(TimeoutError, match=r"waited 0\.3 s to connect"):
        async with HangingClient(id="r", timeout=0.3):
            pass
    # A server that opens it and never answers the handshake.
    client = ScriptedClient(id="r", timeout=0.3)
    with anyio.fail_after(5), pytest.raises(TimeoutError) as caught:
        async with client:
            pass
    assert str(caught.value) == "waited 0.3 s for the first sync with room 'r'"
    assert len(client.server_ends) == 1
