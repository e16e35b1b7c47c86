"""Rooms shared by several real ``jupyter server`` processes through a real Redis.

The servers share one root, as replicas on shared storage do; each test starts them with
the extension's Redis setting and checks what users would see: every client has every
edit once, one server writes each file, and faults (a server killed, Redis restarted)
lose and duplicate nothing. Where a fault must fall at an exact point of a room's work,
the two servers run in the test's process, and the fault is put there.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest
import redis.asyncio as aioredis
from pycrdt import Map, Text

from jupyter_rooms import bind, connect
from jupyter_rooms.jupyter.extension import REDIS_URL_ENV
from jupyter_rooms.jupyter.filerooms import _BASE_FIELDS, FileRoom
from jupyter_rooms.jupyter.wire import JupyterServer
from jupyter_rooms.notebook import Notebook
from jupyter_rooms.redis import RedisRoom

from helpers import wait_until
from jupyter_process import ServerProcess
from redis_server import RedisServer

pytestmark = pytest.mark.anyio

# Save and look at files often, and hand the saver's role over quickly when it dies.
FAST = (
    "--RoomsApp.save_delay=0.1",
    "--RoomsApp.poll_interval=0.2",
    "--RoomsApp.redis_lock_ttl=1.5",
)


def shared(redis: RedisServer) -> tuple[str, ...]:
    return (*FAST, f"--RoomsApp.redis_url={redis.url}")


async def start(*servers: ServerProcess) -> None:
    async with anyio.create_task_group() as tg:
        for server in servers:
            tg.start_soon(server.start)


def cell_sources(path: Path) -> list[str] | None:
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except (FileNotFoundError, ValueError, nbformat.ValidationError):
        return None
    return [cell.source for cell in nb.cells]


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


async def savers(servers: list[ServerProcess], room: str) -> list[dict[str, Any]]:
    """What each server's ``api/rooms`` says of a room."""
    return [(await server.rooms())[room] for server in servers]


async def test_clients_of_three_servers_converge_and_one_saves(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # A password, as production Redis has; the third server finds the URL in the
    # environment instead of its settings.
    directory = tmp_path / "redis"
    directory.mkdir()
    redis = RedisServer(directory, password="s3cret pass")
    redis.start()
    try:
        servers = [
            make_server(*shared(redis)),
            make_server(*shared(redis)),
            make_server(*FAST, extra_env={REDIS_URL_ENV: redis.url}),
        ]
        root = servers[0].root
        (root / "notes.txt").write_text("start\n")
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("x = 1")]
        nbformat.write(nb, root / "analysis.ipynb")
        await start(*servers)
        async with (
            servers[0].join("notes.txt") as t0,
            servers[1].join("notes.txt") as t1,
            servers[2].join("notes.txt") as t2,
            servers[0].join("analysis.ipynb") as n0,
            servers[1].join("analysis.ipynb") as n1,
            servers[2].join("analysis.ipynb") as n2,
            servers[0].join("board.yroom") as b0,
            servers[1].join("board.yroom") as b1,
            servers[2].join("board.yroom") as b2,
        ):
            texts = [client.doc.get("source", type=Text) for client in (t0, t1, t2)]
            assert all(str(text) == "start\n" for text in texts)
            notebooks = [Notebook(client.doc) for client in (n0, n1, n2)]
            assert all([c.source for c in nb] == ["x = 1"] for nb in notebooks)
            boards = [client.doc.get("board", type=Map) for client in (b0, b1, b2)]

            # Every client edits at once, each on its own server.
            for round in range(20):
                for i, text in enumerate(texts):
                    text.insert(len(str(text)), f"{i}.{round} ")
            for i, notebook in enumerate(notebooks):
                notebook.append_cell(f"cell from server {i}")
            for i, board in enumerate(boards):
                board[f"server {i}"] = i

            await wait_until(lambda: len({str(text) for text in texts}) == 1, within=20)
            words = str(texts[0]).split()
            assert words[0] == "start"
            assert sorted(words[1:]) == sorted(f"{i}.{r}" for i in range(3) for r in range(20))
            expected_cells = ["x = 1"] + [f"cell from server {i}" for i in range(3)]
            await wait_until(
                lambda: all(
                    sorted(c.source for c in nb) == sorted(expected_cells) for nb in notebooks
                )
            )
            await wait_until(lambda: len({tuple(c.id for c in nb) for nb in notebooks}) == 1)
            board = {f"server {i}": i for i in range(3)}
            await wait_until(lambda: all(b.to_py() == board for b in boards))

            # Presence crosses servers.
            t0.awareness.set_local_state({"user": {"name": "ada"}})
            await wait_until(
                lambda: {"user": {"name": "ada"}} in t2.awareness.states.values(), within=10
            )

            # The files have each edit once.
            final_text = str(texts[0])
            await wait_until(lambda: read_text(root / "notes.txt") == final_text)
            cells = [c.source for c in notebooks[0]]
            await wait_until(lambda: cell_sources(root / "analysis.ipynb") == cells)

            # One server saves each room; the others never wrote its file.
            for room in ("notes.txt", "analysis.ipynb", "board.yroom"):
                seen = await savers(servers, room)
                assert sum(info["saver"] for info in seen) == 1, seen
                assert all(info["saves"] == 0 for info in seen if not info["saver"]), seen
                assert len({info["epoch"] for info in seen}) == 1, seen
            seen = await savers(servers, "notes.txt")
            assert sum(info["saves"] for info in seen) > 0
        # Every client left, every room closed: the free-form room's file holds the board.
        await wait_until(lambda: (root / "board.yroom").exists())
        async with servers[1].join("board.yroom") as again:
            assert again.doc.get("board", type=Map).to_py() == board
    finally:
        redis.stop()


async def test_a_saver_killed_mid_edit_loses_nothing_redis_had(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    first = make_server(*shared(redis_server))
    second = make_server(*shared(redis_server))
    path = first.root / "notes.txt"
    path.write_text("start\n")
    await start(first, second)
    async with first.join("notes.txt", reconnect=False) as writer:
        # The first server to open the room saves it.
        async with second.join("notes.txt") as witness:
            assert (await first.rooms())["notes.txt"]["saver"]
            text = writer.doc.get("source", type=Text)
            seen = witness.doc.get("source", type=Text)
            for i in range(200):
                text.insert(len(str(text)), f"line {i}\n")
            expected = str(text)
            # The other server has it all: it went through Redis.
            await wait_until(lambda: str(seen) == expected)
            first.stop(signal.SIGKILL)
            seen.insert(len(str(seen)), "after the kill\n")
            expected += "after the kill\n"
            # The survivor takes the saver's role once the lock expires, and saves.
            await wait_until(lambda: read_text(path) == expected, within=20)
            assert (await second.rooms())["notes.txt"]["saver"]
    restarted = make_server(*shared(redis_server), port=first.port)
    await restarted.start()
    async with restarted.join("notes.txt") as reader:
        assert str(reader.doc.get("source", type=Text)) == expected
    assert read_text(path) == expected


async def test_the_presence_of_a_killed_servers_users_goes_from_the_others(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    first = make_server(*shared(redis_server))
    second = make_server(*shared(redis_server))
    (first.root / "notes.txt").write_text("")
    await start(first, second)
    async with (
        first.join("notes.txt", reconnect=False) as ada,
        second.join("notes.txt") as bob,
        second.join("notes.txt") as cy,
    ):
        ada.awareness.set_local_state({"user": {"name": "ada"}})
        bob.awareness.set_local_state({"user": {"name": "bob"}})
        cy.awareness.set_local_state({"user": {"name": "cy"}})

        def names() -> set[str]:
            return {state["user"]["name"] for state in bob.awareness.states.values() if state}

        await wait_until(lambda: names() == {"ada", "bob", "cy"}, within=10)
        await wait_until(lambda: len(ada.awareness.states) == 3, within=10)
        # The server's heartbeat must have been seen before it can be missed.
        await anyio.sleep(3)
        first.stop(signal.SIGKILL)
        killed = anyio.current_time()
        # Well before the 30 s after which presence not renewed goes anyway.
        await wait_until(lambda: names() == {"bob", "cy"}, within=15)
        elapsed = anyio.current_time() - killed
        assert elapsed < 15
        # The survivor's own users stay.
        await anyio.sleep(1)
        assert names() == {"bob", "cy"}


async def test_redis_restarts_while_clients_edit(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    first = make_server(*shared(redis_server))
    second = make_server(*shared(redis_server))
    path = first.root / "notes.txt"
    path.write_text("start\n")
    await start(first, second)
    async with (
        first.join("notes.txt") as a,
        first.join("notes.txt") as a2,
        second.join("notes.txt") as b,
    ):
        a_text = a.doc.get("source", type=Text)
        a2_text = a2.doc.get("source", type=Text)
        b_text = b.doc.get("source", type=Text)
        a_text.insert(len(str(a_text)), "before\n")
        await wait_until(lambda: str(b_text) == "start\nbefore\n")

        redis_server.stop()
        # Each server keeps its own clients' room working, for longer than the clients
        # of Redis retry by themselves and than the saver's lock lasts.
        for i in range(10):
            a_text.insert(len(str(a_text)), f"a{i}\n")
            b_text.insert(0, f"b{i}\n")
            await anyio.sleep(0.25)
        await wait_until(lambda: str(a2_text) == str(a_text))
        assert "b0" not in str(a_text)
        redis_server.start()

        await wait_until(lambda: str(a_text) == str(b_text) == str(a2_text), within=30)
        lines = str(a_text).splitlines()
        assert sorted(lines) == sorted(
            ["start", "before"] + [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)]
        )
        b_text.insert(len(str(b_text)), "after\n")
        await wait_until(lambda: str(a_text).endswith("after\n"))
        final = str(a_text)
        await wait_until(lambda: read_text(path) == final, within=20)
        seen = await savers([first, second], "notes.txt")
        assert sum(info["saver"] for info in seen) == 1, seen
    for server in (first, second):
        assert server.log_text().count("Redis is unreachable") == 1


async def test_a_late_server_sees_everything_once(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, tmp_path: Path
) -> None:
    first = make_server(*shared(redis_server))
    path = first.root / "analysis.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("print(x)")]
    nbformat.write(nb, path)
    await first.start()
    async with first.join("analysis.ipynb") as a:
        epoch = a.epoch
        notebook = Notebook(a.doc)
        notebook.append_cell("# one", cell_type="markdown")
        expected = ["x = 1", "print(x)", "# one"]
        await wait_until(lambda: cell_sources(path) == expected)

        # A server started now loads the room from Redis: the file's cells are not
        # added again, and it is the same epoch.
        second = make_server(*shared(redis_server))
        await second.start()
        async with second.join("analysis.ipynb") as b:
            assert b.epoch == epoch
            late = Notebook(b.doc)
            assert [c.source for c in late] == expected
            late.append_cell("# two", cell_type="markdown")
            expected.append("# two")
            await wait_until(lambda: [c.source for c in notebook] == expected)
            await wait_until(lambda: cell_sources(path) == expected)
            assert not (await second.rooms())["analysis.ipynb"]["saver"]
            assert (await second.rooms())["analysis.ipynb"]["saves"] == 0

            # The first server stops: the late one takes over and saves from now on.
            first.stop()
            for _ in range(200):
                if (await second.rooms())["analysis.ipynb"]["saver"]:
                    break
                await anyio.sleep(0.05)
            late.append_cell("# three", cell_type="markdown")
            expected.append("# three")
            await wait_until(lambda: cell_sources(path) == expected, within=20)
            # The file is on disk a moment before the save returns to the room and counts.
            for _ in range(100):
                info = (await second.rooms())["analysis.ipynb"]
                if info["saves"] > 0:
                    break
                await anyio.sleep(0.05)
            assert info["saver"] and info["saves"] > 0, info
    second.stop()

    # Every server is gone; one with none of their logs (another data directory) opens
    # the room: Redis's history is the room's, the file's cells are not added again.
    env = {"JUPYTER_DATA_DIR": str(tmp_path / "other-data")}
    third = make_server(*shared(redis_server), extra_env=env)
    await third.start()
    async with third.join("analysis.ipynb") as c:
        assert c.epoch == epoch
        assert [cell.source for cell in Notebook(c.doc)] == expected
        Notebook(c.doc).append_cell("# four", cell_type="markdown")
        expected.append("# four")
        await wait_until(lambda: cell_sources(path) == expected)


def test_without_the_setting_redis_is_not_imported(tmp_path: Path) -> None:
    script = """
import sys, anyio
from pycrdt import Text
from jupyter_rooms import bind, connect

async def main():
    async with bind("jupyter", root_dir=sys.argv[1], port=0, save_delay=0.05) as server:
        async with connect("jupyter", id="a.txt", url=server.url, token=server.token) as c:
            c.doc.get("source", type=Text).insert(0, "hi")
    assert open(sys.argv[1] + "/a.txt").read() == "hi"
    assert "redis" not in sys.modules, "redis was imported"

anyio.run(main)
"""
    env = {"JUPYTER_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_without_the_redis_package_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_rooms import bind

    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(ImportError, match=r"pip install 'jupyter_rooms\[redis\]'"):
        bind("jupyter", root_dir=tmp_path, port=0, redis_url="redis://127.0.0.1:1")
    with pytest.raises(ImportError, match=r"pip install 'jupyter_rooms\[redis\]'"):
        bind("websocket", port=0, redis_url="redis://127.0.0.1:1")


async def test_redis_emptied_while_servers_were_down_keeps_the_history(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    server = make_server(*shared(redis_server))
    path = server.root / "notes.txt"
    path.write_text("start\n")
    await server.start()
    async with server.join("notes.txt") as a:
        epoch = a.epoch
        text = a.doc.get("source", type=Text)
        text.insert(len(str(text)), "more\n")
        await wait_until(lambda: read_text(path) == "start\nmore\n")
    server.stop()
    # Redis loses everything (no persistence, say); the server's own log still has the
    # room's history: the room keeps its epoch and adds nothing twice.
    client = aioredis.from_url(redis_server.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    restarted = make_server(*shared(redis_server), port=server.port)
    await restarted.start()
    async with restarted.join("notes.txt") as b:
        assert b.epoch == epoch
        text = b.doc.get("source", type=Text)
        assert str(text) == "start\nmore\n"
        text.insert(len(str(text)), "again\n")
        await wait_until(lambda: read_text(path) == "start\nmore\nagain\n")


async def test_a_room_reopened_on_the_same_server_keeps_its_edits(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    # The room closes when its last client leaves and opens again on the same server:
    # what that server's clients wrote is in Redis under this server's id, and is the
    # room's as much as anyone's.
    server = make_server(*shared(redis_server), "--RoomsApp.cleanup_delay=0")
    path = server.root / "notes.txt"
    path.write_text("start\n")
    await server.start()
    async with server.join("notes.txt") as a:
        text = a.doc.get("source", type=Text)
        text.insert(len(str(text)), "mine\n")
        await wait_until(lambda: read_text(path) == "start\nmine\n")
    for _ in range(100):
        if "notes.txt" not in await server.rooms():
            break
        await anyio.sleep(0.05)
    else:
        raise AssertionError("the room did not close")
    async with server.join("notes.txt") as b:
        text = b.doc.get("source", type=Text)
        assert str(text) == "start\nmine\n"
        text.insert(len(str(text)), "again\n")
        await wait_until(lambda: read_text(path) == "start\nmine\nagain\n")
    assert read_text(path) == "start\nmine\nagain\n"


# Two servers in this process, where a fault must fall at an exact point of a room's work.


@asynccontextmanager
async def in_process(root: Path, redis: RedisServer) -> AsyncIterator[JupyterServer]:
    async with bind(
        "jupyter",
        root_dir=root,
        redis_url=redis.url,
        redis_lock_ttl=1.0,
        save_delay=0.1,
        poll_interval=0.1,
        cleanup_delay=0.0,
    ) as server:
        assert isinstance(server, JupyterServer)
        yield server


def join(server: JupyterServer, path: str) -> Any:
    return connect("jupyter", id=path, url=server.url, token=server.token)


async def test_a_change_merged_from_the_file_reaches_the_others_with_its_record(
    root: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The saver merges a change another program made to the file, then writes nothing
    # more to the shared metadata (Redis is away for it, say) and stops. The next saver
    # must know that the file's change is in the room already, or merge it a second time.
    path = root / "notes.txt"
    path.write_text("start\n")
    failing: set[str] = set()
    store = RedisRoom.store_shared_meta

    async def store_unless_failing(self: RedisRoom, fields: Any, **options: Any) -> bool:
        if self.server_id in failing:
            raise ConnectionError("Redis is away")
        return await store(self, fields, **options)

    monkeypatch.setattr(RedisRoom, "store_shared_meta", store_unless_failing)
    stop_first = anyio.Event()

    async def run_first(*, task_status: Any) -> None:
        # The first server to open the room saves it.
        async with in_process(root, redis_server) as first, join(first, "notes.txt"):
            saver = first.room_manager.rooms["notes.txt"]
            assert isinstance(saver, RedisRoom)
            await wait_until(lambda: saver.is_saver)
            task_status.started(saver)
            await stop_first.wait()

    async with in_process(root, redis_server) as second, anyio.create_task_group() as tg:
        saver = await tg.start(run_first)
        async with join(second, "notes.txt") as client:
            text = client.doc.get("source", type=Text)
            assert str(text) == "start\n"
            failing.add(saver.server_id)
            path.write_text("start\nfrom another program\n")
            await wait_until(lambda: str(text) == "start\nfrom another program\n")
            # The saver stops; the other server takes the file over, and saves an edit.
            stop_first.set()
            other = second.room_manager.rooms["notes.txt"]
            assert isinstance(other, RedisRoom)
            await wait_until(lambda: other.is_saver)
            text.insert(len(str(text)), "end\n")
            expected = "start\nfrom another program\nend\n"
            await wait_until(lambda: read_text(path) == expected)
            assert str(text) == expected


async def test_a_merge_whose_answer_from_redis_is_lost_is_not_made_twice(
    root: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis takes the saver's merged change and the record with it, but the answer is
    # lost: the saver cannot tell whether it was taken. It gets the change from the
    # stream like the others, and does not merge the file's change again.
    path = root / "notes.txt"
    path.write_text("start\n")
    async with (
        in_process(root, redis_server) as first,
        join(first, "notes.txt") as writer,
        in_process(root, redis_server) as second,
        join(second, "notes.txt") as reader,
    ):
        saver = first.room_manager.rooms["notes.txt"]
        assert isinstance(saver, RedisRoom)
        await wait_until(lambda: saver.is_saver)
        share = saver.share_change
        lost: list[bytes] = []

        async def share_then_lose_the_answer(change: bytes, fields: Any, **options: Any) -> bool:
            assert await share(change, fields, **options)
            if not lost:
                lost.append(change)
                raise ConnectionError("Connection closed by server.")
            return True

        monkeypatch.setattr(saver, "share_change", share_then_lose_the_answer)
        path.write_text("start\nfrom another program\n")
        texts = [client.doc.get("source", type=Text) for client in (writer, reader)]
        await wait_until(lambda: all(str(t) == "start\nfrom another program\n" for t in texts))
        assert lost
        texts[0].insert(len(str(texts[0])), "end\n")
        expected = "start\nfrom another program\nend\n"
        await wait_until(lambda: read_text(path) == expected)
        await wait_until(lambda: all(str(t) == expected for t in texts))
        # Looked at a few times more (every 0.1 s), the file is not merged again.
        await anyio.sleep(0.5)
        assert all(str(t) == expected for t in texts)
        assert read_text(path) == expected


async def a_shared_save_under_way(
    redis: RedisServer, room_id: str, before: dict[bytes, bytes]
) -> None:
    """Leave in Redis what a saver killed in the middle of a save leaves: the record of
    the file as it was before (``before``: the metadata then), marked as a save under
    way, with the document that save was writing (the room's newest) in the other field."""
    client = aioredis.from_url(redis.url)
    try:
        key = f"jupyter_rooms:{room_id}:meta"
        now = await client.hgetall(key)
        newest = now[json.loads(now[b"saved"])["base"].encode()]
        record = json.loads(before[b"saved"])
        field = record["base"]
        spare = next(name for name in _BASE_FIELDS if name != field)
        record["saving"] = True
        await client.hset(
            key,
            mapping={field: before[field.encode()], spare: newest, "saved": json.dumps(record)},
        )
    finally:
        await client.aclose()


async def shared_meta(redis: RedisServer, room_id: str) -> dict[bytes, bytes]:
    client = aioredis.from_url(redis.url)
    try:
        meta: Any = await client.hgetall(f"jupyter_rooms:{room_id}:meta")
        return dict(meta)
    finally:
        await client.aclose()


@pytest.mark.parametrize("kind", ["text", "notebook"])
async def test_a_save_cut_short_by_a_killed_saver_is_written_again_by_the_next(
    root: Path, redis_server: RedisServer, kind: str
) -> None:
    # The saver is killed while writing the file (contents managers write in place):
    # the file holds the beginning of its save. The next saver writes it whole rather
    # than merging the piece as a deletion of the rest (text), or leaving the notebook
    # broken.
    name = "long.txt" if kind == "text" else "long.ipynb"
    path = root / name

    def add(client: Any, first: int, last: int) -> None:
        if kind == "text":
            text = client.doc.get("source", type=Text)
            text.insert(len(str(text)), "".join(f"line {i}\n" for i in range(first, last)))
        else:
            notebook = Notebook(client.doc)
            for i in range(first, last):
                notebook.append_cell(f"x = {i}")

    def on_disk() -> list[str] | None:
        if kind == "text":
            text = read_text(path)
            return None if text is None else text.splitlines()
        return cell_sources(path)

    expected = [f"line {i}" if kind == "text" else f"x = {i}" for i in range(400)]
    async with in_process(root, redis_server) as first, join(first, name) as client:
        add(client, 0, 200)
        await wait_until(lambda: on_disk() == expected[:200])
        before = await shared_meta(redis_server, name)
        add(client, 200, 400)
        await wait_until(lambda: on_disk() == expected)
    whole = path.read_bytes()
    await a_shared_save_under_way(redis_server, name, before)
    path.write_bytes(whole[: len(whole) * 3 // 4])
    async with in_process(root, redis_server) as second, join(second, name) as client:
        await wait_until(lambda: on_disk() == expected)
        if kind == "text":
            assert str(client.doc.get("source", type=Text)).splitlines() == expected
        else:
            assert [cell.source for cell in Notebook(client.doc)] == expected


async def test_a_saver_that_took_its_lock_again_reads_the_record_again(
    root: Path, redis_server: RedisServer
) -> None:
    # The saver's lock ran out while it stalled, another server saved (its record is
    # the one in Redis now), and the saver's late renewal took the free lock again: it
    # reads the record of the file again rather than go on from its own last one.
    (root / "notes.txt").write_text("start\n")
    async with in_process(root, redis_server) as server, join(server, "notes.txt"):
        room = server.room_manager.rooms["notes.txt"]
        assert isinstance(room, RedisRoom) and isinstance(room, FileRoom)
        await wait_until(lambda: room.is_saver)
        term = room.saver_term
        redis = aioredis.from_url(redis_server.url)
        try:
            key = "jupyter_rooms:notes.txt:meta"
            record = json.loads(await redis.hget(key, "saved"))
            record["time"] = "2026-01-01T00:00:00+00:00"
            await redis.hset(key, "saved", json.dumps(record))
            # As if the lock had run out.
            assert await redis.delete("jupyter_rooms:notes.txt:saver") == 1
            await wait_until(lambda: room.saver_term == term + 1, within=5)
            await wait_until(lambda: room.last_saved == record["time"], within=5)
        finally:
            await redis.aclose()
