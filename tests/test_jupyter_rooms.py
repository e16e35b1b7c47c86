"""The jupyter wire in a real Jupyter server (in this process), with real websocket clients:
files saved and merged, renames, deletions, auth, bad paths and bad messages."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from pycrdt import Array, Doc, Map, Text
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_rooms import bind, connect
from jupyter_rooms.client import ChannelClient
from jupyter_rooms.jupyter.documents import NotebookKind, TextKind
from jupyter_rooms.jupyter.filerooms import FileRoom
from jupyter_rooms.jupyter.kernelenv import ENV_ROOT, ENV_TOKEN, ENV_URL
from jupyter_rooms.jupyter.wire import JupyterServer, MissingServerError
from jupyter_rooms.notebook import Notebook
from jupyter_rooms.protocol import sync_step1, sync_update
from jupyter_rooms.room import _Client
from jupyter_rooms.updatelog import UpdateLog

from faults import JUPYTER_TOKEN, JupyterProcess
from helpers import INPUTS_TRIED, login_cookie

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def serve(root: Path, **options: Any) -> AsyncIterator[JupyterServer]:
    options.setdefault("save_delay", 0.1)
    options.setdefault("poll_interval", 0.1)
    options.setdefault("cleanup_delay", 0.0)
    async with bind("jupyter", root_dir=root, **options) as server:
        assert isinstance(server, JupyterServer)
        yield server


def join(server: JupyterServer, path: str, **options: Any) -> Any:
    options.setdefault("token", server.token)
    return connect("jupyter", id=path, url=server.url, **options)


async def until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not predicate():
            await anyio.sleep(0.02)


def read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return "<missing>"


def notebook_on_disk(path: Path) -> nbformat.NotebookNode | None:
    """The notebook in a file if it is a complete, valid one."""
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except (FileNotFoundError, ValueError, nbformat.ValidationError):
        return None
    return nb


def make_notebook(path: Path, sources: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, path)
    return nb


def a_save_under_way(name: str) -> None:
    """Leave in a room's log what a server killed in the middle of saving leaves: the
    record of a save of everything the log holds, and no record that it ended."""
    (log,) = Path(os.environ["JUPYTER_DATA_DIR"]).rglob(f"{name}.ylog")
    updatelog = UpdateLog(log)
    updatelog.append(meta={"saving": {"updates": len(updatelog.load().updates)}})
    updatelog.close()


async def a_text_save_cut_short(root: Path) -> tuple[Path, str]:
    """``long.txt`` saved with 2,000 lines, then cut in half by a crash in the middle of
    its next save: its path and the whole text."""
    path = root / "long.txt"
    expected = "".join(f"line {i}\n" for i in range(2000))
    async with serve(root) as server, join(server, "long.txt") as client:
        client.doc.get("source", type=Text).insert(0, expected)
        await until(lambda: read(path) == expected)
    a_save_under_way("long.txt")
    path.write_text(expected[:1000])
    return path, expected


async def a_notebook_save_cut_short(root: Path, sources: list[str]) -> bytes:
    """``cut.ipynb`` saved with cells of these sources, then cut in half by a crash in
    the middle of its next save: the half the file holds."""
    path = root / "cut.ipynb"
    async with serve(root) as server, join(server, "cut.ipynb") as client:
        notebook = Notebook(client.doc)
        for source in sources:
            notebook.append_cell(source)
        await until(lambda: notebook_on_disk(path) is not None)
    written = path.read_bytes()
    a_save_under_way("cut.ipynb")
    piece = written[: len(written) // 2]
    path.write_bytes(piece)
    return piece


async def saves_nothing(room: FileRoom) -> bool:
    """In place of ``FileRoom._save``: the room never gets to write its file."""
    room._retry_later()
    return False


async def fetch(server: JupyterServer, path: str, **kwargs: Any) -> Any:
    headers = kwargs.pop("headers", {"Authorization": f"token {server.token}"})
    response = await AsyncHTTPClient().fetch(server.url + path, headers=headers, **kwargs)
    return json.loads(response.body) if response.body else None


async def test_two_clients_edit_a_text_file(root: Path) -> None:
    (root / "notes.txt").write_text("one\ntwo\n")
    async with serve(root) as server:
        async with join(server, "notes.txt") as alice, join(server, "notes.txt") as bob:
            a = alice.doc.get("source", type=Text)
            b = bob.doc.get("source", type=Text)
            assert str(a) == str(b) == "one\ntwo\n"
            a.insert(0, "zero\n")
            b += "three\n"
            expected = "zero\none\ntwo\nthree\n"
            await until(lambda: str(a) == expected and str(b) == expected)
            await until(lambda: read(root / "notes.txt") == expected)
            rooms = (await fetch(server, "api/rooms"))["rooms"]
            assert [(r["id"], r["clients"]) for r in rooms] == [("notes.txt", 2)]


async def test_two_clients_edit_a_notebook(root: Path) -> None:
    original = make_notebook(root / "nb.ipynb", ["a = 1", "print(a)"])
    async with serve(root) as server:
        async with join(server, "nb.ipynb") as alice, join(server, "nb.ipynb") as bob:
            nb_a, nb_b = Notebook(alice.doc), Notebook(bob.doc)
            assert [cell.source for cell in nb_a] == ["a = 1", "print(a)"]
            nb_a[0].source = "a = 2"
            nb_b.append_cell("# the end", cell_type="markdown")
            await until(lambda: len(nb_a) == 3 and nb_b[0].source == "a = 2")

            def saved() -> bool:
                nb = notebook_on_disk(root / "nb.ipynb")
                return nb is not None and [c.source for c in nb.cells] == [
                    "a = 2",
                    "print(a)",
                    "# the end",
                ]

            await until(saved)
    nb = nbformat.read(root / "nb.ipynb", as_version=4)
    nbformat.validate(nb)
    assert [cell.id for cell in nb.cells[:2]] == [cell.id for cell in original.cells]
    assert nb.cells[2].cell_type == "markdown"


async def test_new_paths_open_empty_and_appear_on_first_save(root: Path) -> None:
    async with serve(root) as server:
        async with join(server, "empty.txt") as client:
            assert str(client.doc.get("source", type=Text)) == ""
        async with join(server, "new.ipynb") as client:
            assert len(Notebook(client.doc)) == 0
            Notebook(client.doc).append_cell("x = 1")
        async with join(server, "new.txt") as client:
            client.doc.get("source", type=Text).insert(0, "hello")
        await until(lambda: notebook_on_disk(root / "new.ipynb") is not None)
        await until(lambda: read(root / "new.txt") == "hello")
    # Opened, never changed: never written, and no history kept for it.
    assert not (root / "empty.txt").exists()
    logs = Path(os.environ["JUPYTER_DATA_DIR"])
    assert sorted(log.name for log in logs.rglob("*.ylog")) == ["new.ipynb.ylog", "new.txt.ylog"]
    nb = notebook_on_disk(root / "new.ipynb")
    assert nb is not None and [cell.source for cell in nb.cells] == ["x = 1"]


async def test_looking_at_paths_leaves_no_history_behind(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    async with serve(root) as server:
        for path in ("a/b/probe.txt", "a/probe.ipynb", "probe.yroom"):
            async with join(server, path):
                pass
        await until(lambda: not server.room_manager.rooms)
        # A room reopened after that starts empty, as a new path does.
        async with join(server, "a/b/probe.txt") as client:
            assert str(client.doc.get("source", type=Text)) == ""
        await until(lambda: not server.room_manager.rooms)
    logs = Path(os.environ["JUPYTER_DATA_DIR"])
    assert [p for p in logs.rglob("*") if "probe" in p.name or p.name in ("a", "b")] == []
    assert [p.relative_to(root).as_posix() for p in root.rglob("*")] == ["a", "a/b"]


def calls_of(monkeypatch: pytest.MonkeyPatch, method: str) -> list[str]:
    """The ids of the rooms whose ``FileRoom`` coroutine ``method`` is called, in order."""
    calls: list[str] = []
    original = getattr(FileRoom, method)

    async def counted(room: FileRoom, *args: Any) -> Any:
        calls.append(room.id)
        return await original(room, *args)

    monkeypatch.setattr(FileRoom, method, counted)
    return calls


def cell_sources(path: Path) -> list[str] | None:
    notebook = notebook_on_disk(path)
    return None if notebook is None else [cell.source for cell in notebook.cells]


async def test_bookkeeping_changes_start_no_save(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # JupyterLab's state map and a cell's execution state are not in the file: a
    # change to them is kept, but does not make the room read its document to save.
    make_notebook(root / "nb.ipynb", ["x = 1"])
    snapshots = calls_of(monkeypatch, "_snapshot")
    async with serve(root) as server, join(server, "nb.ipynb") as client:
        cell = client.doc.get("cells", type=Array)[0]
        with client.doc.transaction():
            client.doc.get("state", type=Map)["dirty"] = True
            cell["execution_state"] = "busy"
        room = server.room_manager.rooms["nb.ipynb"]
        await until(lambda: room.doc.get("state", type=Map).get("dirty") is True)
        # Saves are due 0.1 s after a change.
        await anyio.sleep(0.5)
        assert snapshots == []
        Notebook(client.doc)[0].source = "x = 2"
        await until(lambda: cell_sources(root / "nb.ipynb") == ["x = 2"])
        assert snapshots


async def test_the_first_client_of_a_new_room_gets_all_of_it(root: Path) -> None:
    # The first clients' sync reply is the update the room's building made: all of the
    # document, its bookkeeping too.
    make_notebook(root / "nb.ipynb", ["a = 1", "b = 2"])
    (root / "t.txt").write_text("text\n")
    async with serve(root) as server:
        for path in ("nb.ipynb", "t.txt"):
            async with join(server, path) as client:
                room = server.room_manager.rooms[path]
                assert client.doc.get_state() == room.doc.get_state()
                assert client.doc.get("state", type=Map).get("path") == path
                assert client.doc.get_update() == room.doc.get_update()


async def test_an_unchanged_document_is_not_saved(root: Path) -> None:
    path = root / "keep.txt"
    path.write_text("as it was\n")
    os.utime(path, (1_000_000, 1_000_000))
    async with serve(root) as server:
        async with join(server, "keep.txt") as client:
            assert str(client.doc.get("source", type=Text)) == "as it was\n"
        await until(lambda: not server.room_manager.rooms)
    assert path.stat().st_mtime == 1_000_000


async def test_saves_at_shutdown_with_clients_connected(root: Path) -> None:
    running = serve(root, save_delay=60.0)
    server = await running.__aenter__()
    try:
        async with join(server, "late.txt", reconnect=False) as client:
            client.doc.get("source", type=Text).insert(0, "saved on the way out")
            room = server.room_manager.rooms["late.txt"]
            await until(lambda: str(room.doc.get("source", type=Text)) == "saved on the way out")
            assert not (root / "late.txt").exists()
            with anyio.fail_after(10):
                await running.__aexit__(None, None, None)
            assert not client.connected
    finally:
        await running.__aexit__(None, None, None)
    assert read(root / "late.txt") == "saved on the way out"


async def test_out_of_band_text_edit_is_merged_as_a_diff(root: Path) -> None:
    path = root / "a.txt"
    path.write_text("alpha\nbeta\ngamma\n")
    async with serve(root, save_delay=60.0) as server:
        async with join(server, "a.txt") as client:
            text = client.doc.get("source", type=Text)
            # An edit the file does not have yet (saves are far off)...
            text.insert(0, ">")
            await until(lambda: server.room_manager.rooms["a.txt"].unsaved)
            deltas: list[Any] = []
            subscription = text.observe(lambda event: deltas.append(event.delta))
            # ...while another program changes the file.
            path.write_text("alpha\nBETA\ngamma\ndelta\n")
            await until(lambda: str(text) == ">alpha\nBETA\ngamma\ndelta\n")
            merged = [op for delta in deltas for op in delta]
            deleted = sum(op.get("delete", 0) for op in merged)
            inserted = "".join(op.get("insert", "") for op in merged)
            # Only the changed characters moved: no clear-and-reinsert.
            assert deleted <= len("beta")
            assert len(inserted) <= len("BETA") + len("delta\n")
            text.unobserve(subscription)


async def test_out_of_band_notebook_edit_is_merged_per_cell(root: Path) -> None:
    path = root / "nb.ipynb"
    nb = make_notebook(path, ["a = 1", "b = 2", "c = 3"])
    async with serve(root, save_delay=60.0) as server:
        async with join(server, "nb.ipynb") as client:
            notebook = Notebook(client.doc)
            cells = client.doc.get("cells", type=Array)
            cell_events: list[Any] = []
            subscriptions = [cells.observe(lambda event: cell_events.append(event.delta))]
            source_events: list[Any] = []
            cell_b_source = client.doc.get("cells", type=Array)[1]["source"]
            subscriptions.append(
                cell_b_source.observe(lambda event: source_events.append(event.delta))
            )
            notebook[0].source = "a = 10"
            nb.cells[1].source = "b = 20"
            nb.cells.append(nbformat.v4.new_markdown_cell("added outside"))
            nbformat.write(nb, path)
            await until(lambda: len(notebook) == 4)
            assert [cell.source for cell in notebook] == [
                "a = 10",
                "b = 20",
                "c = 3",
                "added outside",
            ]
            assert [cell.id for cell in notebook][:3] == [cell.id for cell in nb.cells[:3]]
            # The cells array got one insertion; cell b's text got a character edit.
            ops = [op for delta in cell_events for op in delta]
            assert not any("delete" in op for op in ops)
            assert sum(len(op.get("insert", [])) for op in ops) == 1
            text_ops = [op for delta in source_events for op in delta]
            assert "".join(op.get("insert", "") for op in text_ops) == "0"
            assert not any("delete" in op for op in text_ops)
            assert len(subscriptions) == 2


async def test_a_change_merged_from_the_file_reaches_clients_once_it_is_on_record(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client that had the merged change when the server was killed before writing it
    # down would give it back on reconnecting, beside the same change merged from the
    # file again by the restarted server (as another change): the cell twice. So the
    # change goes to clients only once the log holds it.
    path = root / "nb.ipynb"
    nb = make_notebook(path, ["a = 1"])
    events: list[str] = []
    append = UpdateLog.append

    def recording_append(
        log: UpdateLog, updates: Any = (), meta: Any = None, *, time: Any = None
    ) -> None:
        updates = list(updates)
        if any(b"added outside" in update for update in updates):
            events.append("logged")
        append(log, updates, meta, time=time)

    enqueue = _Client.enqueue

    def recording_enqueue(conn: _Client, item: Any) -> None:
        if b"added outside" in item[0]:
            events.append("sent")
        enqueue(conn, item)

    monkeypatch.setattr(UpdateLog, "append", recording_append)
    monkeypatch.setattr(_Client, "enqueue", recording_enqueue)
    async with serve(root, save_delay=60.0) as server, join(server, "nb.ipynb") as client:
        nb.cells.append(nbformat.v4.new_markdown_cell("added outside"))
        nbformat.write(nb, path)
        notebook = Notebook(client.doc)
        await until(lambda: len(notebook) == 2)
        assert [cell.source for cell in notebook] == ["a = 1", "added outside"]
    assert events == ["logged", "sent"]


async def test_an_unreadable_file_is_never_overwritten(root: Path) -> None:
    path = root / "nb.ipynb"
    nb = make_notebook(path, ["x = 1"])
    async with serve(root) as server:
        async with join(server, "nb.ipynb") as client:
            errors: list[str] = []
            client.on_status(
                lambda status, details: (
                    errors.append(details.get("reason", "")) if status == "error" else None
                )
            )
            path.write_text("{ this is not json")
            await until(lambda: any("cannot read" in e for e in errors))
            Notebook(client.doc)[0].source = "x = 2"
            await anyio.sleep(0.5)  # several save delays and polls: none may write
            assert path.read_text() == "{ this is not json"
            # Repaired by its author: the room's edit merges with it and is saved.
            nb.cells.append(nbformat.v4.new_code_cell("y = 1"))
            nbformat.write(nb, path)

            def merged() -> bool:
                nb = notebook_on_disk(path)
                return nb is not None and [c.source for c in nb.cells] == ["x = 2", "y = 1"]

            await until(merged)


async def test_rename_keeps_the_room(root: Path) -> None:
    (root / "old.txt").write_text("text\n")
    async with serve(root) as server:
        async with join(server, "old.txt") as client:
            text = client.doc.get("source", type=Text)
            await fetch(
                server,
                "api/contents/old.txt",
                method="PATCH",
                body=json.dumps({"path": "new.txt"}),
                headers={"Authorization": f"token {server.token}"},
            )
            await until(lambda: "new.txt" in server.room_manager.rooms)
            text += "more\n"
            await until(lambda: read(root / "new.txt") == "text\nmore\n")
            async with join(server, "new.txt") as other:
                assert str(other.doc.get("source", type=Text)) == "text\nmore\n"
                rooms = (await fetch(server, "api/rooms"))["rooms"]
                assert [(r["id"], r["clients"]) for r in rooms] == [("new.txt", 2)]
            assert client.connected
        await anyio.sleep(0.3)
    assert not (root / "old.txt").exists()


async def test_delete_closes_the_room(root: Path) -> None:
    (root / "gone.txt").write_text("bye\n")
    async with serve(root) as server:
        async with join(server, "gone.txt") as client:
            statuses: list[tuple[str, dict[str, Any]]] = []
            client.on_status(lambda status, details: statuses.append((status, details)))
            await fetch(
                server,
                "api/contents/gone.txt",
                method="DELETE",
                headers={"Authorization": f"token {server.token}"},
            )
            await until(lambda: not client.connected)
            assert client.close_code == 4404
            assert "deleted" in client.close_reason
            client.doc.get("source", type=Text).insert(0, "too late")
            await anyio.sleep(0.3)
        await until(lambda: not server.room_manager.rooms)
    assert not (root / "gone.txt").exists()
    assert not list(Path(os.environ["JUPYTER_DATA_DIR"]).rglob("gone.txt.ylog"))


async def test_a_server_in_this_process_takes_its_address_back_when_it_stops(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a kernel, whose own server's address is in its environment.
    monkeypatch.setenv(ENV_URL, "http://127.0.0.1:8888/")
    async with serve(root) as server:
        # Its kernels are sent to it, and so is connect("jupyter") in this process.
        assert os.environ[ENV_URL] == server.url
        async with connect("jupyter", id="x.txt") as client:
            client.doc.get("source", type=Text).insert(0, "x")
    assert os.environ[ENV_URL] == "http://127.0.0.1:8888/"
    assert ENV_TOKEN not in os.environ and ENV_ROOT not in os.environ


async def test_connect_needs_a_server_and_a_valid_token(root: Path) -> None:
    with pytest.raises(MissingServerError, match="url="):
        connect("jupyter", id="x.txt")
    async with serve(root) as server:
        # A refusal says what to give.
        hints = {"": "no token was given: give token=", "wrong": "the token is not this server's"}
        for token, hint in hints.items():
            with pytest.raises(ConnectionError, match=f"403.*{hint}"):
                async with join(server, "x.txt", token=token, timeout=5):
                    pass
        # The token as a query argument, and the websocket protocol from scratch.
        url = server.url.replace("http", "ws") + f"api/rooms/x.txt?token={server.token}"
        connection = await websocket_connect(url)
        connection.write_message(sync_step1(b"\x00"), binary=True)
        with anyio.fail_after(5):
            first = await connection.read_message()
        assert isinstance(first, bytes) and first[0] == 100  # the room's epoch notice
        connection.close()
    assert not (root / "x.txt").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("save_delay", -1.0),
        ("save_delay", "soon"),
        ("poll_interval", float("nan")),
        ("cleanup_delay", -5),
        ("max_message_size", 0),
        ("max_backlog", 0),
        ("shutdown_timeout", -0.5),
        ("compact_size", -1),
        ("redis_lock_ttl", 0.0),
    ],
)
async def test_bad_options_are_refused_before_the_server_starts(
    root: Path, option: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=f"RoomsApp.{option}|'{option}' trait"):
        async with serve(root, **{option: value}):
            pass
    assert list(root.iterdir()) == []
    assert not Path(os.environ["JUPYTER_DATA_DIR"]).exists()


async def test_origin_checks_follow_the_server(root: Path) -> None:
    config = {"ServerApp": {"allow_origin": "https://ok.example"}}
    async with serve(root, server_config=config) as server:
        url = server.url.replace("http", "ws") + "api/rooms/x.txt"
        cookie = await login_cookie(server)
        for origin in ("https://evil.example", "http://127.0.0.1:1"):
            request = HTTPRequest(url, headers={"Cookie": cookie, "Origin": origin})
            with pytest.raises(HTTPClientError) as refused:
                await websocket_connect(request)
            assert refused.value.code == 403
        for origin in ("https://ok.example", f"http://127.0.0.1:{server.port}"):
            request = HTTPRequest(url, headers={"Cookie": cookie, "Origin": origin})
            connection = await websocket_connect(request)
            connection.close()


class ReadOnlyAuthorizer(Authorizer):
    """Lets users read, never write."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return action == "read"


async def test_a_read_only_user_receives_but_cannot_change(root: Path) -> None:
    (root / "ro.txt").write_text("look, don't touch\n")
    config = {"ServerApp": {"authorizer_class": ReadOnlyAuthorizer}}
    async with serve(root, server_config=config) as server:
        async with join(server, "ro.txt") as reader, join(server, "ro.txt") as other:
            errors: list[str] = []
            reader.on_status(lambda s, d: errors.append(d["reason"]) if s == "error" else None)
            text = reader.doc.get("source", type=Text)
            assert str(text) == "look, don't touch\n"
            text.insert(0, "touched! ")
            await until(lambda: any("read-only" in e for e in errors))
            assert str(other.doc.get("source", type=Text)) == "look, don't touch\n"
            await anyio.sleep(0.3)
    assert (root / "ro.txt").read_text() == "look, don't touch\n"


class NoContentsAuthorizer(Authorizer):
    """Lets users do anything but touch contents."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != "contents"


async def test_a_user_who_may_not_read_contents_is_refused(root: Path) -> None:
    (root / "secret.txt").write_text("for other eyes\n")
    config = {"ServerApp": {"authorizer_class": NoContentsAuthorizer}}
    async with serve(root, server_config=config) as server:
        for path in ("secret.txt", "new.txt"):
            url = server.url.replace("http", "ws") + f"api/rooms/{path}"
            request = HTTPRequest(url, headers={"Authorization": f"token {server.token}"})
            with pytest.raises(HTTPClientError) as error:
                await websocket_connect(request)
            assert error.value.code == 403, path
        with pytest.raises(HTTPClientError) as error:
            await fetch(server, "api/rooms")
        assert error.value.code == 403
        assert not server.room_manager.rooms
    assert sorted(p.name for p in root.iterdir()) == ["secret.txt"]
    assert not list(Path(os.environ["JUPYTER_DATA_DIR"]).rglob("*.ylog"))


async def test_paths_outside_the_root_hidden_or_directories_are_refused(
    root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "sub").mkdir()
    (root / "link").symlink_to(outside)
    (root / ".hidden.txt").write_text("secret")
    refused = {
        "..%2Fescape.txt": 400,
        "sub/..%2F..%2Fescape.txt": 400,
        "%2Fetc%2Fpasswd": 400,
        "link/escape.txt": 403,
        ".hidden.txt": 403,
        "sub": 400,
        "nodir/x.txt": 404,
    }
    async with serve(root) as server:
        base = server.url.replace("http", "ws") + "api/rooms/"
        for path, status in refused.items():
            request = HTTPRequest(base + path, headers={"Authorization": f"token {server.token}"})
            with pytest.raises(HTTPClientError) as error:
                await websocket_connect(request)
            assert error.value.code == status, path
        assert not server.room_manager.rooms
    assert list(outside.iterdir()) == []
    assert not list(Path(os.environ["JUPYTER_DATA_DIR"]).rglob("*.ylog"))


@pytest.mark.parametrize("log_dir", ["logs", "."])
async def test_logs_kept_under_the_root_cannot_have_rooms(root: Path, log_dir: str) -> None:
    options = {"log_dir": str(root / log_dir)}
    async with serve(root, **options) as server:
        async with join(server, "notes.txt") as client:
            client.doc.get("source", type=Text).insert(0, "history")
            await until(lambda: read(root / "notes.txt") == "history")
            (log,) = root.rglob("notes.txt.ylog")
            before = log.read_bytes()
            headers = {"Authorization": f"token {server.token}"}
            base = server.url.replace("http", "ws") + "api/rooms/"
            for path in (log, log.with_name("new.txt")):
                request = HTTPRequest(base + path.relative_to(root).as_posix(), headers=headers)
                with pytest.raises(HTTPClientError) as error:
                    await websocket_connect(request)
                assert error.value.code == 403, path
            # The room itself may append to its log meanwhile (its save's record);
            # nothing else may have written it.
            assert log.read_bytes().startswith(before)
            assert list(server.room_manager.rooms) == ["notes.txt"]
    async with serve(root, **options) as server, join(server, "notes.txt") as client:
        assert str(client.doc.get("source", type=Text)) == "history"
    assert not list(root.rglob("*.unusable-*"))


async def test_a_room_whose_history_cannot_be_kept_says_why_without_server_paths(
    root: Path, tmp_path: Path
) -> None:
    (root / "a.txt").write_text("kept\n")
    not_a_directory = tmp_path / "not-a-directory"
    not_a_directory.write_text("")
    async with serve(root, log_dir=str(not_a_directory)) as server:
        with pytest.raises(ConnectionError) as error:
            async with join(server, "a.txt", reconnect=False, timeout=5):
                pass
        reason = str(error.value)
        assert "4400" in reason and "cannot read the history of a.txt" in reason
        # Close reasons are short: a path of the server's would crowd out the rest.
        assert "Not a directory: 'a.txt.ylog'" in reason and str(tmp_path) not in reason
    assert (root / "a.txt").read_text() == "kept\n"


async def test_an_oversized_message_closes_only_its_sender(root: Path) -> None:
    async with serve(root, max_message_size=4096) as server:
        async with join(server, "big.txt") as client:
            url = server.url.replace("http", "ws") + "api/rooms/big.txt"
            request = HTTPRequest(url, headers={"Authorization": f"token {server.token}"})
            connection = await websocket_connect(request)
            doc: Doc = Doc()
            doc.get("source", type=Text).insert(0, "x" * 10_000)
            connection.write_message(sync_update(doc.get_update()), binary=True)
            with anyio.fail_after(5):
                while await connection.read_message() is not None:
                    pass
            assert connection.close_code == 1009
            text = client.doc.get("source", type=Text)
            text.insert(0, "still fine")
            async with join(server, "big.txt") as other:
                other_text = other.doc.get("source", type=Text)
                await until(lambda: str(other_text) == "still fine")


@pytest.fixture
async def shared_server(root: Path) -> AsyncIterator[tuple[JupyterServer, ChannelClient]]:
    (root / "target.txt").write_text("intact\n")
    async with serve(root) as server, join(server, "target.txt") as client:
        yield server, client


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    message=st.one_of(
        st.binary(max_size=64),
        st.builds(lambda tail: b"\x00\x02" + tail, st.binary(max_size=32)),
        st.builds(lambda tail: b"\x00\x00" + tail, st.binary(max_size=32)),
        st.builds(lambda tail: b"\x01" + tail, st.binary(max_size=32)),
        st.text(max_size=16),
    )
)
async def test_malformed_messages_never_harm_the_room(
    shared_server: tuple[JupyterServer, ChannelClient], message: bytes | str
) -> None:
    INPUTS_TRIED["malformed messages (jupyter wire)"] += 1
    server, client = shared_server
    url = server.url.replace("http", "ws") + "api/rooms/target.txt"
    connection = await websocket_connect(
        HTTPRequest(url, headers={"Authorization": f"token {server.token}"})
    )
    connection.write_message(message, binary=isinstance(message, bytes))
    connection.close()
    text = client.doc.get("source", type=Text)
    assert str(text).endswith("intact\n")
    assert client.connected
    # The room still works for everyone else.
    marker = f"{len(str(text))}|"
    text.insert(0, marker)
    async with join(server, "target.txt") as other:
        other_text = other.doc.get("source", type=Text)
        await until(lambda: str(other_text).startswith(marker))


async def test_free_form_rooms_live_in_an_update_log_file(root: Path) -> None:
    async with serve(root) as server:
        async with join(server, "state.yroom") as client:
            client.doc.get("settings", type=Map)["theme"] = "dark"
            client.doc.get("items", type=Array).append("first")
        await until(lambda: (root / "state.yroom").exists() and not server.room_manager.rooms)
        # The file wire reads the same file...
        async with connect("file", path=root / "state.yroom") as reader:
            assert reader.doc.get("settings", type=Map).to_py() == {"theme": "dark"}
            assert reader.doc.get("items", type=Array).to_py() == ["first"]
        # ...and what it adds to it merges into the open room.
        async with join(server, "state.yroom") as client:
            items = client.doc.get("items", type=Array)
            async with connect("file", path=root / "state.yroom") as writer:
                writer.doc.get("items", type=Array).append("from the file")
            await until(lambda: items.to_py() == ["first", "from the file"])


async def test_the_log_is_compacted(root: Path) -> None:
    async with serve(root, compact_size=16_384, save_delay=60.0) as server:
        async with join(server, "busy.txt") as client:
            text = client.doc.get("source", type=Text)
            for i in range(3000):
                text.insert(len(str(text)), f"{i % 10}")
                if i % 100 == 99:
                    del text[0:50]
            room = server.room_manager.rooms["busy.txt"]
            await until(lambda: room.doc.get("source", type=Text).to_py() == str(text))
            logs = list(Path(os.environ["JUPYTER_DATA_DIR"]).rglob("busy.txt.ylog"))
            assert len(logs) == 1
            await until(lambda: logs[0].stat().st_size < 4 * 16_384)
            expected = str(text)
    assert read(root / "busy.txt") == expected
    async with serve(root) as server, join(server, "busy.txt") as client:
        assert str(client.doc.get("source", type=Text)) == expected


async def test_a_room_without_history_starts_a_new_epoch(root: Path) -> None:
    (root / "nb.ipynb").write_text("")
    make_notebook(root / "nb.ipynb", ["one", "two"])
    running = serve(root)
    server = await running.__aenter__()
    try:
        client = join(server, "nb.ipynb", max_backoff=0.2)
        resets: list[str] = []
        client.on_status(
            lambda status, details: resets.append(status) if status == "reset" else None
        )
        async with client:
            first_epoch = client.epoch
            assert [c.source for c in Notebook(client.doc)] == ["one", "two"]
            await running.__aexit__(None, None, None)
            await until(lambda: not client.connected)
            # The history goes; the file comes back from elsewhere with other cells.
            for log in Path(os.environ["JUPYTER_DATA_DIR"]).rglob("*.ylog"):
                log.unlink()
            make_notebook(root / "nb.ipynb", ["one", "two", "three"])
            async with serve(root, port=server.port, token=server.token):
                await until(lambda: client.synchronized.is_set() and resets == ["reset"])
                assert client.epoch != first_epoch
                # Replaced, not merged: no cell twice.
                await until(
                    lambda: [c.source for c in Notebook(client.doc)] == ["one", "two", "three"]
                )
    finally:
        await running.__aexit__(None, None, None)


async def test_renaming_a_directory_moves_its_rooms_and_their_history(root: Path) -> None:
    (root / "dir").mkdir()
    (root / "dir" / "open.txt").write_text("open\n")
    (root / "dir" / "closed.txt").write_text("closed\n")
    async with serve(root) as server:
        async with join(server, "dir/closed.txt") as client:
            closed_epoch = client.epoch
            client.doc.get("source", type=Text).insert(0, "edited ")
        await until(lambda: read(root / "dir" / "closed.txt") == "edited closed\n")
        async with join(server, "dir/open.txt") as client:
            await fetch(
                server,
                "api/contents/dir",
                method="PATCH",
                body=json.dumps({"path": "moved"}),
                headers={"Authorization": f"token {server.token}"},
            )
            await until(lambda: "moved/open.txt" in server.room_manager.rooms)
            client.doc.get("source", type=Text).insert(0, "still ")
            await until(lambda: read(root / "moved" / "open.txt") == "still open\n")
        # The closed room's history moved too: same epoch, no new start.
        async with join(server, "moved/closed.txt") as client:
            assert str(client.doc.get("source", type=Text)) == "edited closed\n"
            assert client.epoch == closed_epoch
            logs = list(Path(os.environ["JUPYTER_DATA_DIR"]).rglob("*.ylog"))
            assert sorted(log.name for log in logs) == ["closed.txt.ylog", "open.txt.ylog"]
            assert all(log.parent.name == "moved" for log in logs)
    assert not (root / "dir").exists()


async def test_a_save_cut_short_by_a_crash_is_written_again_not_merged(root: Path) -> None:
    # What a server killed while writing a file leaves: a "saving" record in the log,
    # and the file holding only the beginning of what was being written (contents
    # managers write in place).
    path, expected = await a_text_save_cut_short(root)
    async with serve(root) as server, join(server, "long.txt") as client:
        assert str(client.doc.get("source", type=Text)) == expected
        await until(lambda: read(path) == expected)


async def test_an_edit_made_while_a_save_looks_at_the_file_survives_a_merge(root: Path) -> None:
    # A save looks at the file (asynchronously) before writing; an edit that arrives
    # meanwhile is not in what it writes. The room's record of what the file holds
    # must not claim that edit, or merging a later change to the file would undo it.
    path = root / "a.txt"
    path.write_text("alpha\n")
    async with serve(root, save_delay=1.0) as server:
        async with join(server, "a.txt") as client:
            text = client.doc.get("source", type=Text)
            room = server.room_manager.rooms["a.txt"]
            look = room._changed_since_check
            typed = anyio.Event()

            async def look_while_someone_types() -> bool:
                changed = await look()
                if not typed.is_set():
                    typed.set()
                    room.doc.get("source", type=Text).insert(0, "typed ")
                return changed

            room._changed_since_check = look_while_someone_types  # type: ignore[method-assign]
            text.insert(len(str(text)), "beta\n")
            await until(lambda: "beta" in read(path))
            # Before the room saves again, another program changes the file: its change
            # is merged, and the edit stays whether or not that save wrote it.
            path.write_text(read(path) + "gamma\n")
            await until(lambda: "gamma" in str(text))
            assert str(text) == "typed alpha\nbeta\ngamma\n"
            await until(lambda: read(path) == "typed alpha\nbeta\ngamma\n")


async def test_a_notebook_save_cut_short_by_a_crash_is_written_again(root: Path) -> None:
    # A notebook cut short is not JSON: the room tells its own interrupted save from
    # another program's damage by the bytes, and writes the notebook again.
    path = root / "cut.ipynb"
    piece = await a_notebook_save_cut_short(root, [f"x = {i}\nprint(x)" for i in range(50)])
    async with serve(root) as server, join(server, "cut.ipynb") as client:
        assert len(Notebook(client.doc)) == 50
        await until(lambda: notebook_on_disk(path) is not None)
    nb = notebook_on_disk(path)
    assert nb is not None and [cell.source for cell in nb.cells][-1] == "x = 49\nprint(x)"

    # The same piece with a change of someone else's is not the room's to overwrite.
    a_save_under_way("cut.ipynb")
    damaged = piece.replace(b"x = 1", b"y = 1", 1)
    path.write_bytes(damaged)
    async with serve(root) as server, join(server, "cut.ipynb") as client:
        assert len(Notebook(client.doc)) == 50
        Notebook(client.doc).append_cell("more")
        await anyio.sleep(0.5)
        assert server.room_manager.rooms["cut.ipynb"].unsaved
    assert path.read_bytes() == damaged


async def test_a_new_epochs_log_is_written_before_a_change_is_taken(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A room opened from its file writes its log in the background: clients get the
    # document at once, but no change of theirs is applied or passed on before the log
    # holds the document it applies to.
    make_notebook(root / "nb.ipynb", ["a = 1"])
    release = threading.Event()
    writing = threading.Event()
    rewrite = UpdateLog.rewrite

    def slow_rewrite(log: UpdateLog, update: bytes, meta: dict[str, Any], **kwargs: Any) -> None:
        writing.set()
        release.wait(30)
        rewrite(log, update, meta, **kwargs)

    monkeypatch.setattr(UpdateLog, "rewrite", slow_rewrite)
    try:
        async with serve(root) as server:
            async with join(server, "nb.ipynb") as alice, join(server, "nb.ipynb") as bob:
                assert writing.is_set()
                assert [cell.source for cell in Notebook(bob.doc)] == ["a = 1"]
                room = server.room_manager.rooms["nb.ipynb"]
                Notebook(alice.doc)[0].source = "a = 2"
                await anyio.sleep(0.3)
                assert [cell.source for cell in Notebook(room.doc)] == ["a = 1"]
                assert [cell.source for cell in Notebook(bob.doc)] == ["a = 1"]
                release.set()
                await until(lambda: [cell.source for cell in Notebook(bob.doc)] == ["a = 2"])
                (log,) = Path(os.environ["JUPYTER_DATA_DIR"]).rglob("nb.ipynb.ylog")
                updates = UpdateLog(log).load().updates
                first: Doc = Doc()
                first.apply_update(updates[0])
                assert [cell.source for cell in Notebook(first)] == ["a = 1"]
                assert len(updates) > 1
    finally:
        release.set()


async def test_a_kill_right_after_opening_loses_nothing(tmp_path: Path) -> None:
    # Killed as soon as a room was opened from its file (its log may not be written
    # yet), then as soon as an edit was taken: each time every change is there again.
    server = JupyterProcess(tmp_path)
    make_notebook(server.root / "nb.ipynb", ["a = 1", "b = 2"])

    def enter() -> Any:
        url = f"http://127.0.0.1:{server.port}/"
        return connect("jupyter", id="nb.ipynb", url=url, token=JUPYTER_TOKEN)

    def sources(client: Any) -> list[str]:
        return [cell.source for cell in Notebook(client.doc)]

    try:
        await server.start()
        async with enter() as client:
            assert sources(client) == ["a = 1", "b = 2"]
            await server.stop(signal.SIGKILL)
        await server.start()
        async with enter() as client:
            assert sources(client) == ["a = 1", "b = 2"]
            Notebook(client.doc)[0].source = "a = 3"
            async with enter() as other:
                await until(lambda: sources(other) == ["a = 3", "b = 2"])
            await server.stop(signal.SIGKILL)
        await server.start()
        async with enter() as client:
            assert sources(client) == ["a = 3", "b = 2"]
        nb = notebook_on_disk(server.root / "nb.ipynb")
        assert nb is not None
    finally:
        await server.stop(signal.SIGKILL)


async def test_a_visit_without_changes_does_not_look_at_the_file_again(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last client leaving saves at once what changed; with nothing changed there is
    # nothing to save, nor to compare with the file (which takes a while for a large one).
    make_notebook(root / "nb.ipynb", ["a = 1"])
    saves = calls_of(monkeypatch, "_save")
    async with serve(root, cleanup_delay=60.0, save_delay=60.0, poll_interval=60.0) as server:
        async with join(server, "nb.ipynb") as client:
            assert [cell.source for cell in Notebook(client.doc)] == ["a = 1"]
        room = server.room_manager.rooms["nb.ipynb"]
        await until(lambda: room.client_count == 0)
        await anyio.sleep(0.3)
        assert saves == []
        async with join(server, "nb.ipynb") as client:
            Notebook(client.doc)[0].source = "a = 2"
            await until(lambda: Notebook(room.doc)[0].source == "a = 2")
        await until(lambda: saves == ["nb.ipynb"])
    assert notebook_on_disk(root / "nb.ipynb").cells[0].source == "a = 2"  # type: ignore[union-attr]


async def test_an_edit_held_while_the_log_is_written_is_saved_when_the_server_stops(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client edits and leaves, and the server stops, all while the room's first log
    # record is still being written: the edit waited for it, and is saved nonetheless.
    rewrite = UpdateLog.rewrite

    def slow_rewrite(log: UpdateLog, update: bytes, meta: dict[str, Any], **kwargs: Any) -> None:
        time.sleep(0.2)
        rewrite(log, update, meta, **kwargs)

    monkeypatch.setattr(UpdateLog, "rewrite", slow_rewrite)
    async with serve(root, cleanup_delay=60.0) as server:
        async with join(server, "a.txt") as client:
            client.doc.get("source", type=Text).insert(0, "hi")
    assert read(root / "a.txt") == "hi"
    async with serve(root) as server, join(server, "a.txt") as client:
        assert str(client.doc.get("source", type=Text)) == "hi"


async def test_a_change_made_after_a_save_the_server_did_not_record_is_merged_once(
    root: Path,
) -> None:
    # The server is killed after writing the file but before recording the save, and
    # another program then changes the file: the change is merged from what the room
    # wrote, so the room's own lines are not added a second time.
    path = root / "t.txt"
    path.write_text("one\n")
    async with serve(root) as server, join(server, "t.txt") as client:
        # Autosave off (as a JupyterLab page can ask): the edit stays in the log only.
        client.awareness.set_local_state({"autosave": False})
        text = client.doc.get("source", type=Text)
        await until(lambda: server.room_manager.rooms["t.txt"].autosave is False)
        text.insert(len(str(text)), "two\n")
        await until(lambda: server.room_manager.rooms["t.txt"].unsaved is True)
    assert read(path) == "one\n"
    a_save_under_way("t.txt")
    path.write_text("one\ntwo\nthree\n")
    async with serve(root) as server, join(server, "t.txt") as client:
        assert str(client.doc.get("source", type=Text)) == "one\ntwo\nthree\n"


async def test_a_change_to_a_cut_short_save_keeps_the_rest_of_it(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crash cut a save short; before the room writes the file again (here its saves
    # fail for a while), another program appends to the piece in the file. What that
    # program never saw, the rest of the room's save, is not deleted.
    path, expected = await a_text_save_cut_short(root)
    failing = True
    save = AsyncLargeFileManager.save

    async def save_or_fail(self: AsyncLargeFileManager, model: Any, path: str) -> Any:
        if failing:
            raise OSError("disk full")
        return await save(self, model, path)

    monkeypatch.setattr(AsyncLargeFileManager, "save", save_or_fail)
    async with serve(root) as server, join(server, "long.txt") as client:
        text = client.doc.get("source", type=Text)
        path.write_text(expected[:1000] + "added\n")
        await until(lambda: "added" in str(text))
        assert str(text) == expected[:1000] + "added\n" + expected[1000:]
        failing = False
        await until(lambda: read(path) == str(text))


async def test_a_change_made_while_the_contents_manager_prepares_a_save_is_kept(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The contents manager takes a while between being asked to save and opening the
    # file (a large notebook's nodes, signature and validation); another program that
    # writes the file then must not have its change written over.
    path = root / "t.txt"
    path.write_text("one\n")
    save = AsyncLargeFileManager.save
    writes: list[str] = []

    async def change_then_save(self: AsyncLargeFileManager, model: Any, name: str) -> Any:
        if not writes:
            # After the room's last look at the file, before the manager writes it.
            writes.append(read(path) + "three\n")
            path.write_text(writes[0])
        return await save(self, model, name)

    monkeypatch.setattr(AsyncLargeFileManager, "save", change_then_save)
    async with serve(root) as server, join(server, "t.txt") as client:
        text = client.doc.get("source", type=Text)
        text.insert(len(str(text)), "two\n")
        await until(lambda: "three" in str(text))
        await until(lambda: read(path) == str(text))
        assert str(text) in ("one\ntwo\nthree\n", "one\nthree\ntwo\n")


async def written_over(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    overwrite: Callable[[str, str], str],
    halfway: str | None = None,
) -> tuple[str, str]:
    """A room's text file, saved as ``one\ntwo\n`` (the file held ``one\n``), and another
    program that writes the file during that save, with what ``overwrite(held, saved)``
    makes: what the room's client holds once the change is merged, and the file then."""
    path = root / "t.txt"
    path.write_text("one\n")
    save = AsyncLargeFileManager.save
    writes: list[str] = []

    async def save_then_overwrite(self: AsyncLargeFileManager, model: Any, name: str) -> Any:
        held = read(path)
        answer = await save(self, model, name)
        if not writes:
            # The other program, writing as the contents manager finishes (with
            # ``halfway``, in two steps: that first, the rest a moment later).
            writes.append(overwrite(held, model["content"]))
            if halfway is None:
                path.write_text(writes[0])
            else:
                path.write_text(halfway)
                asyncio.get_running_loop().call_later(0.02, path.write_text, writes[0])
        return answer

    monkeypatch.setattr(AsyncLargeFileManager, "save", save_then_overwrite)
    async with serve(root) as server, join(server, "t.txt") as client:
        text = client.doc.get("source", type=Text)
        text.insert(len(str(text)), "two\n")
        await until(lambda: bool(writes) and "three" in str(text))
        await until(lambda: read(path) == str(text))
        return str(text), read(path)


async def test_a_change_made_to_a_file_a_save_had_emptied_deletes_nothing(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Contents managers write files in place, emptying them first: a program that read
    # the file in that moment saw nothing, and wrote a line. The room's save is not
    # its deletion.
    text, on_disk = await written_over(root, monkeypatch, lambda held, saved: "three\n")
    assert text == on_disk == "three\none\ntwo\n"


async def test_a_change_made_to_the_file_before_a_save_keeps_the_save(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A program read the file before the room's save and wrote it back with its change
    # while the room was saving: the room's edit since is not its deletion.
    text, on_disk = await written_over(root, monkeypatch, lambda held, saved: held + "three\n")
    # Both went after "one" at once: either may come first.
    assert text == on_disk
    assert text in ("one\ntwo\nthree\n", "one\nthree\ntwo\n")


async def test_a_cell_added_to_a_notebook_before_a_save_keeps_the_save(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same for a notebook: a program read it before the room's save, added a cell
    # and wrote it back during the save. The room's edit in the save stays.
    path = root / "nb.ipynb"
    make_notebook(path, ["one"])
    save = AsyncLargeFileManager.save
    writes: list[str] = []

    async def save_then_overwrite(self: AsyncLargeFileManager, model: Any, name: str) -> Any:
        held = path.read_text()
        answer = await save(self, model, name)
        if not writes:
            nb = nbformat.reads(held, as_version=4)
            nb.cells.append(nbformat.v4.new_markdown_cell("three"))
            writes.append(nbformat.writes(nb))
            path.write_text(writes[0])
        return answer

    monkeypatch.setattr(AsyncLargeFileManager, "save", save_then_overwrite)
    async with serve(root) as server, join(server, "nb.ipynb") as client:
        notebook = Notebook(client.doc)
        notebook[0].source = "one, edited"
        await until(lambda: len(notebook) == 2)
        assert [cell.source for cell in notebook] == ["one, edited", "three"]
        await until(
            lambda: (
                (on_disk := notebook_on_disk(path)) is not None
                and [cell.source for cell in on_disk.cells] == ["one, edited", "three"]
            )
        )


async def test_a_file_read_back_while_another_program_writes_it_is_taken_once_written(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The room reads its save back while another program writes the file in place:
    # what it reads is the emptied file. That is no one's change yet; the program's
    # content, once written, is merged as made to the save.
    text, on_disk = await written_over(
        root, monkeypatch, lambda held, saved: saved + "three\n", halfway=""
    )
    assert text == on_disk == "one\ntwo\nthree\n"


async def test_a_change_made_to_a_save_right_after_it_is_taken_as_it_is(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A program that changed the room's save itself, right after it was written: its
    # change, a deletion included, is merged as made.
    text, on_disk = await written_over(
        root, monkeypatch, lambda held, saved: saved.replace("one\n", "three\n")
    )
    assert text == on_disk == "three\ntwo\n"


async def test_a_change_to_a_cut_short_save_is_kept_across_another_stop(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As above, but the server stops again after merging the other program's change and
    # before any save: the file still holds only the changed piece, which the next
    # opening must again take for the beginning of the room's document.
    path, expected = await a_text_save_cut_short(root)
    whole = expected[:1000] + "added\n" + expected[1000:]

    with monkeypatch.context() as patch:
        patch.setattr(FileRoom, "_save", saves_nothing)
        async with serve(root) as server, join(server, "long.txt") as client:
            text = client.doc.get("source", type=Text)
            path.write_text(expected[:1000] + "added\n")
            await until(lambda: "added" in str(text))
            assert str(text) == whole
    assert read(path) == expected[:1000] + "added\n"
    async with serve(root) as server, join(server, "long.txt") as client:
        assert str(client.doc.get("source", type=Text)) == whole
        await until(lambda: read(path) == whole)


async def test_a_reopened_room_reads_its_file_only_if_it_changed(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A room rebuilt from its log compares the file's hash with the one it saved: the
    # same file is not read as a notebook again (which takes a while for a large one);
    # a file changed while the room was closed is read and merged.
    make_notebook(root / "nb.ipynb", ["a = 1", "b = 1"])
    (root / "a.txt").write_text("alpha\n")
    # The rooms stay open until they have saved (a save cut off by the room closing is
    # settled by comparing contents when it reopens instead).
    async with serve(root, cleanup_delay=60.0) as server:
        async with join(server, "nb.ipynb") as client:
            Notebook(client.doc)[0].source = "a = 2"
            notebook_room = server.room_manager.rooms["nb.ipynb"]
        async with join(server, "a.txt") as client:
            client.doc.get("source", type=Text).insert(0, "one ")
            text_room = server.room_manager.rooms["a.txt"]
        await until(lambda: notebook_room.unsaved is False and text_room.unsaved is False)
        await until(lambda: notebook_room.saves == 1 and text_room.saves == 1)
    assert notebook_on_disk(root / "nb.ipynb").cells[0].source == "a = 2"  # type: ignore[union-attr]
    assert read(root / "a.txt") == "one alpha\n"

    reads: list[str] = []
    readers = [(NotebookKind, "from_file"), (NotebookKind, "from_model"), (TextKind, "from_model")]
    for kind, name in readers:
        original = getattr(kind, name)

        def counted(self: Any, data: Any, original: Any = original, name: str = name) -> Any:
            reads.append(f"{type(self).__name__}.{name}")
            return original(self, data)

        monkeypatch.setattr(kind, name, counted)

    async with serve(root) as server:
        async with join(server, "nb.ipynb") as client:
            assert [cell.source for cell in Notebook(client.doc)] == ["a = 2", "b = 1"]
        async with join(server, "a.txt") as client:
            assert str(client.doc.get("source", type=Text)) == "one alpha\n"
    assert reads == []

    # Changed while the rooms were closed: read, and merged with the rooms' history.
    nb = nbformat.read(root / "nb.ipynb", as_version=4)
    nb.cells[1].source = "b = 2"
    nbformat.write(nb, root / "nb.ipynb")
    (root / "a.txt").write_text("one alpha\nbeta\n")
    async with serve(root) as server:
        async with join(server, "nb.ipynb") as client:
            assert [cell.source for cell in Notebook(client.doc)] == ["a = 2", "b = 2"]
        async with join(server, "a.txt") as client:
            assert str(client.doc.get("source", type=Text)) == "one alpha\nbeta\n"
    assert "NotebookKind.from_file" in reads and "TextKind.from_model" in reads


async def test_a_save_cut_short_is_found_again_after_another_restart(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The room finds its own save cut short, and the server stops again before writing
    # the file anew: the piece in the file is still not the saved document (the room
    # does not take it for one by its hash); the next opening finds the piece again and
    # writes the file.
    path = root / "cut.ipynb"
    piece = await a_notebook_save_cut_short(root, [f"x = {i}" for i in range(20)])

    with monkeypatch.context() as patch:
        patch.setattr(FileRoom, "_save", saves_nothing)
        async with serve(root) as server, join(server, "cut.ipynb") as client:
            assert len(Notebook(client.doc)) == 20
            room = server.room_manager.rooms["cut.ipynb"]
            assert room._file_error is None and room.unsaved
    assert path.read_bytes() == piece
    async with serve(root) as server, join(server, "cut.ipynb") as client:
        assert len(Notebook(client.doc)) == 20
        await until(lambda: notebook_on_disk(path) is not None)
    nb = notebook_on_disk(path)
    assert nb is not None and len(nb.cells) == 20


async def test_the_collector_is_paused_while_the_contents_manager_reads_and_saves(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The contents manager makes a notebook's every node again when it saves
    # (``nbformat.from_dict``, on the event loop), and when it reads one for a room (a
    # manager that reads notebooks its own way, here one that wraps ``get``: the room
    # reads the files of jupyter_server's own managers itself). With a large notebook,
    # a full collection among them held the loop, and every room's clients, for 150 ms
    # or more.
    path = root / "d.ipynb"
    make_notebook(path, ["a = 1"])
    collecting: dict[str, list[bool]] = {"get": [], "save": []}
    get, save = AsyncLargeFileManager.get, AsyncLargeFileManager.save

    async def get_and_look(self: Any, path: str, content: bool = True, **options: Any) -> Any:
        if content:
            collecting["get"].append(gc.isenabled())
        return await get(self, path, content=content, **options)

    async def save_and_look(self: Any, model: dict[str, Any], path: str = "") -> Any:
        collecting["save"].append(gc.isenabled())
        return await save(self, model, path)

    monkeypatch.setattr(AsyncLargeFileManager, "get", get_and_look)
    monkeypatch.setattr(AsyncLargeFileManager, "save", save_and_look)
    assert gc.isenabled()
    async with serve(root) as server, join(server, "d.ipynb") as client:
        assert [cell.source for cell in Notebook(client.doc)] == ["a = 1"]
        Notebook(client.doc).append_cell("b = 2")
        await until(lambda: "b = 2" in read(path))
        assert gc.isenabled()
    assert collecting["get"] and collecting["save"]
    assert not any(collecting["get"] + collecting["save"])


async def test_a_room_closing_in_the_middle_of_a_save_adds_nothing_twice(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server stops while a save has written the file and is still looking at what
    # it wrote: the save completes with its record, and the closing room does not
    # merge its own write as someone else's change.
    path = root / "d.ipynb"
    make_notebook(path, ["a = 1"])
    reading = anyio.Event()
    read_content = FileRoom._read_content

    async def slow_read(self: FileRoom, kind: Any, **options: Any) -> Any:
        if self.saves:
            reading.set()
            await anyio.sleep(0.5)
        return await read_content(self, kind, **options)

    monkeypatch.setattr(FileRoom, "_read_content", slow_read)
    async with serve(root, save_delay=0.05) as server:
        async with join(server, "d.ipynb") as client:
            Notebook(client.doc).append_cell("b = 2")
            await reading.wait()
            # More to save when the room closes.
            Notebook(client.doc).append_cell("c = 3")
            await until(lambda: len(Notebook(server.room_manager.rooms["d.ipynb"].doc)) == 3)
    monkeypatch.undo()
    expected = ["a = 1", "b = 2", "c = 3"]
    async with serve(root) as server, join(server, "d.ipynb") as client:
        assert [cell.source for cell in Notebook(client.doc)] == expected
    nb = notebook_on_disk(path)
    assert nb is not None and [cell.source for cell in nb.cells] == expected
