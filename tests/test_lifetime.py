"""Leaving any ``async with`` (normally, by an error, by cancellation) leaves nothing
running, and the user's own exception comes out as itself."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from jupyter_rooms import Room, RoomManager, bind, connect
from jupyter_rooms.updatelog import UpdateLog

from helpers import other_tasks, roots, settle

pytestmark = pytest.mark.anyio


class Oops(Exception):
    """The user's own error."""


@asynccontextmanager
async def server_and_clients(wire: str) -> AsyncIterator[None]:
    """A server with a room, two clients in it that have edited and set their presence."""
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(
            bind(wire, host="127.0.0.1") if wire == "websocket" else bind(wire)
        )
        options: dict[str, Any] = (
            {"port": server.port} if wire == "websocket" else {"server": server}  # type: ignore[attr-defined]
        )
        a = await stack.enter_async_context(connect(wire, id="r", **options))
        b = await stack.enter_async_context(connect(wire, id="r", **options))
        a.awareness.set_local_state({"user": "a"})
        roots(a.doc)[0].insert(0, "busy")
        await settle(lambda: str(roots(b.doc)[0]) == "busy")
        yield


@asynccontextmanager
async def _room_with_work() -> AsyncIterator[None]:
    async with Room("r") as room:
        await room.task_group.start(room.run)
        room.task_group.start_soon(anyio.sleep_forever)
        yield


@asynccontextmanager
async def _manager_with_rooms() -> AsyncIterator[None]:
    async with RoomManager(cleanup_delay=60) as manager:
        async with manager.use("kept"):
            pass
        await manager.acquire("held")
        yield


@asynccontextmanager
async def _file_with_pending_writes(path: Path, squash: bool = True) -> AsyncIterator[None]:
    """A file client with changes that wait for a write delay not yet over."""
    async with connect("file", path=path, write_delay=60, squash=squash) as client:
        text = roots(client.doc)[0]
        for char in "pending":
            text += char
        yield


@asynccontextmanager
async def _file_in_a_temporary_directory() -> AsyncIterator[None]:
    with tempfile.TemporaryDirectory() as directory:
        async with _file_with_pending_writes(Path(directory) / "doc.ylog"):
            yield


# What a user enters, each holding tasks of its own while open.
CONTEXTS: dict[str, Callable[[], AbstractAsyncContextManager[Any]]] = {
    "memory": lambda: server_and_clients("memory"),
    "websocket": lambda: server_and_clients("websocket"),
    "file": _file_in_a_temporary_directory,
    "room": _room_with_work,
    "room-manager": _manager_with_rooms,
}


async def wait_for_no_other_tasks(baseline: set[Any]) -> set[Any]:
    # Closing a socket finishes on the event loop's next turns: allow it those.
    await settle(lambda: not (other_tasks() - baseline), timeout=2)
    return other_tasks() - baseline


@pytest.mark.parametrize("what", list(CONTEXTS))
async def test_leaving_normally_leaves_nothing_running(what: str) -> None:
    baseline = other_tasks()
    with anyio.fail_after(10):
        async with CONTEXTS[what]():
            assert other_tasks() - baseline
    assert await wait_for_no_other_tasks(baseline) == set()


@pytest.mark.parametrize("what", list(CONTEXTS))
async def test_the_users_error_comes_out_unwrapped(what: str) -> None:
    baseline = other_tasks()
    with pytest.raises(Oops) as info:
        async with CONTEXTS[what]():
            raise Oops("mine")
    assert type(info.value) is Oops
    assert str(info.value) == "mine"
    assert await wait_for_no_other_tasks(baseline) == set()


@pytest.mark.parametrize("what", list(CONTEXTS))
async def test_cancellation_leaves_nothing_running(what: str) -> None:
    baseline = other_tasks()
    with anyio.move_on_after(10) as outer:
        with anyio.CancelScope() as scope:
            async with CONTEXTS[what]():
                scope.cancel()
                await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert not outer.cancelled_caught
    assert await wait_for_no_other_tasks(baseline) == set()


@pytest.mark.parametrize("wire", ["memory", "websocket"])
async def test_the_users_error_from_nested_blocks_comes_out_unwrapped(wire: str) -> None:
    baseline = other_tasks()
    options: dict[str, Any] = {"host": "127.0.0.1"} if wire == "websocket" else {}
    with pytest.raises(KeyError) as info:
        async with bind(wire, **options) as server:
            target = {"port": server.port} if wire == "websocket" else {"server": server}  # type: ignore[attr-defined]
            async with connect(wire, id="x", **target), connect(wire, id="x", **target):
                {}["missing"]
    assert info.value.args == ("missing",)
    assert await wait_for_no_other_tasks(baseline) == set()


async def test_a_timeout_when_joining_names_where() -> None:
    # Nothing listens on the port: entering fails with an error that says where it tried.
    with anyio.fail_after(10):
        async with bind("websocket", host="127.0.0.1") as server:
            port = server.port  # type: ignore[attr-defined]
        baseline = other_tasks()
        with pytest.raises(ConnectionError, match=str(port)):
            async with connect("websocket", id="x", port=port):
                pass
    assert await wait_for_no_other_tasks(baseline) == set()


@pytest.mark.parametrize("squash", [False, True])
@pytest.mark.parametrize("how", ["normally", "by-error", "by-cancellation"])
async def test_leaving_the_file_wire_leaves_the_whole_log_and_nothing_else(
    tmp_path: Path, how: str, squash: bool
) -> None:
    path = tmp_path / "doc.ylog"
    with anyio.move_on_after(10) as outer:
        with anyio.CancelScope() as scope:
            try:
                async with _file_with_pending_writes(path, squash):
                    if how == "by-error":
                        raise Oops("mine")
                    if how == "by-cancellation":
                        scope.cancel()
                        await anyio.sleep_forever()
            except Oops:
                pass
    assert not outer.cancelled_caught
    # The changes that waited were written (as one), compacted with the rest if asked,
    # and no temporary file is left beside the log.
    contents = UpdateLog(path).load()
    assert not contents.truncated
    assert len(contents.updates) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["doc.ylog"]
    async with connect("file", path=path) as client:
        assert str(roots(client.doc)[0]) == "pending"
