"""Hostile input against a Jupyter server's rooms and a standalone websocket server: paths
that lead to special files or out of the root, missing and wrong credentials, foreign
origins, read-only users who send changes, oversized messages. For each, the server
refuses, and nothing on disk changes: not the files under the root, not what symlinks
point to, not the rooms' history. How many inputs were tried is printed at the end of
the run ("hostile inputs tried")."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyter_server.auth.authorizer import Authorizer
from pycrdt import Array, Doc, Map, Text
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketError, websocket_connect

from jupyter_rooms import bind, connect
from jupyter_rooms.client import FatalClose
from jupyter_rooms.jupyter.wire import JupyterServer
from jupyter_rooms.logroom import LogRoom
from jupyter_rooms.notebook import Notebook
from jupyter_rooms.protocol import (
    awareness_message,
    parse_message,
    sync_step1,
    sync_step2,
    sync_update,
)
from jupyter_rooms.updatelog import UpdateLog

from helpers import INPUTS_TRIED, free_port, login_cookie

pytestmark = pytest.mark.anyio

MAX_MESSAGE = 8192


def fuzz(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


class Place:
    """A server root with files of every kind next to things no room may touch."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "root"
        self.outside = tmp / "outside"
        self.data = tmp / "jupyter_data_dir"
        self.root.mkdir()
        self.outside.mkdir()
        (self.outside / "secret.txt").write_text("not yours\n")
        (self.root / "notes.txt").write_text("intact\n")
        notebook = nbformat.v4.new_notebook()
        notebook.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("x")]
        nbformat.write(notebook, self.root / "nb.ipynb")
        doc: Doc = Doc()
        doc.get("settings", type=Map)["theme"] = "dark"
        UpdateLog(self.root / "state.yroom").rewrite(doc.get_update(), {"kind": "room"})
        (self.root / "sub").mkdir()
        (self.root / "sub" / "inner.txt").write_text("inner\n")
        (self.root / ".hidden.txt").write_text("hidden\n")
        os.mkfifo(self.root / "pipe.txt")
        (self.root / "out.txt").symlink_to(self.outside / "secret.txt")
        (self.root / "outdir").symlink_to(self.outside)
        (self.root / "null.txt").symlink_to("/dev/null")
        (self.root / "loop.txt").symlink_to(self.root / "loop.txt")
        self.device = False
        try:
            os.mknod(self.root / "device.txt", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
            self.device = True
        except (PermissionError, OSError):
            pass

    def special_names(self) -> list[str]:
        names = ["pipe.txt", "out.txt", "outdir", "null.txt", "sub", "loop.txt", ".hidden.txt"]
        return [*names, "device.txt"] if self.device else names

    def snapshot(self, *, logs: bool = True) -> dict[str, Any]:
        """Every entry under the root, outside it and (with ``logs``) in the rooms' logs:
        its kind, and for files their size, time and content."""
        entries: dict[str, Any] = {}
        places = [("root", self.root), ("outside", self.outside)]
        if logs:
            places.append(("logs", self.data / "rooms"))
        for label, top in places:
            for path in sorted(_walk(top)):
                info = os.lstat(path)
                entry: tuple[Any, ...] = (stat.S_IFMT(info.st_mode),)
                if stat.S_ISREG(info.st_mode):
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    entry += (info.st_size, info.st_mtime_ns, digest)
                elif stat.S_ISLNK(info.st_mode):
                    entry += (os.readlink(path),)
                entries[f"{label}/{path.relative_to(top)}"] = entry
        return entries


def _walk(top: Path) -> Iterator[Path]:
    if not top.exists():
        return
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            yield Path(directory) / name


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Place:
    place = Place(tmp_path)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(place.data))
    for name in ("JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    return place


@asynccontextmanager
async def serve(place: Place, **options: Any) -> AsyncIterator[JupyterServer]:
    options.setdefault("save_delay", 0.05)
    options.setdefault("poll_interval", 0.05)
    options.setdefault("cleanup_delay", 0.0)
    options.setdefault("max_message_size", MAX_MESSAGE)
    async with bind("jupyter", root_dir=place.root, **options) as server:
        assert isinstance(server, JupyterServer)
        yield server


def ws_url(server: JupyterServer, path: str) -> str:
    return server.url.replace("http", "ws", 1) + "api/rooms/" + path


def auth(server: JupyterServer) -> dict[str, str]:
    return {"Authorization": f"token {server.token}"}


async def refused_status(request: HTTPRequest) -> int | None:
    """The HTTP status that refused a websocket request (``0``: answered, but not as a
    websocket), or ``None`` if it was accepted (then closed again after a handshake)."""
    try:
        connection = await websocket_connect(request)
    except HTTPClientError as exc:
        return exc.code
    except WebSocketError:
        return 0
    try:
        await connection.write_message(sync_step1(Doc().get_state()), binary=True)
        with anyio.fail_after(5):
            while await connection.read_message() is not None:
                break
    finally:
        connection.close()
    return None


async def quiet(server: JupyterServer) -> None:
    """Wait until every room closed (and so saved what it had to)."""
    if not server.room_manager.rooms:
        return
    with anyio.fail_after(10):
        while server.room_manager.rooms:
            await anyio.sleep(0.02)
    # A few save delays and polls more, in case anything would still write.
    await anyio.sleep(0.2)


# Paths

SEGMENTS = st.sampled_from(
    [
        "..",
        ".",
        "",
        "%2e%2e",
        "%2E%2E%2F",
        "..%2F",
        "%2F",
        "%00",
        "%5C",
        "..%5C",
        "~",
        "C:",
        "etc",
        "passwd",
        "notes.txt",
        "nb.ipynb",
        "state.yroom",
        "sub",
        "inner.txt",
        "pipe.txt",
        "device.txt",
        "out.txt",
        "outdir",
        "secret.txt",
        "null.txt",
        "loop.txt",
        ".hidden.txt",
        "new.txt",
        "%E2%80%AE",
    ]
)


@pytest.fixture
async def path_server(place: Place) -> AsyncIterator[tuple[Place, JupyterServer, dict[str, Any]]]:
    async with serve(place) as server:
        yield place, server, place.snapshot(logs=False)


@fuzz(150)
@given(segments=st.lists(SEGMENTS, min_size=1, max_size=5), leading=st.booleans())
async def test_no_path_reaches_outside_the_root_or_a_special_file(
    path_server: tuple[Place, JupyterServer, dict[str, Any]], segments: list[str], leading: bool
) -> None:
    place, server, before = path_server
    path = ("/" if leading else "") + "/".join(segments)
    INPUTS_TRIED["room paths"] += 1
    logs_before = place.snapshot()
    status = await refused_status(HTTPRequest(ws_url(server, path), headers=auth(server)))
    if status is not None:
        # Refused before anything was opened: not even a log for the room.
        assert place.snapshot() == logs_before, path
    else:
        # Accepted: a plain file under the root, or a new one in an existing directory.
        opened = list(server.room_manager.rooms)
        for room_id in opened:
            real = os.path.realpath(place.root / room_id)
            assert real.startswith(str(place.root) + os.sep), (path, room_id)
            assert not os.path.exists(real) or stat.S_ISREG(os.stat(real).st_mode), path
    await quiet(server)
    assert place.snapshot(logs=False) == before, path


async def test_special_files_directories_and_links_out_are_refused(place: Place) -> None:
    before = place.snapshot()
    async with serve(place) as server:
        for name in place.special_names():
            INPUTS_TRIED["special files"] += 1
            status = await refused_status(HTTPRequest(ws_url(server, name), headers=auth(server)))
            assert status in (400, 403, 404), (name, status)
            # The client library says so at once, without retrying.
            started = time.monotonic()
            with pytest.raises(FatalClose):
                async with connect(
                    "jupyter", id=name, url=server.url, token=server.token, timeout=30
                ):
                    pass
            assert time.monotonic() - started < 5, name
        assert not server.room_manager.rooms
    assert place.snapshot() == before
    assert stat.S_ISFIFO(os.lstat(place.root / "pipe.txt").st_mode)


async def test_a_room_that_cannot_open_fails_its_client_at_once(place: Place) -> None:
    (place.root / "broken.ipynb").write_text("{ not json")
    before = place.snapshot()
    async with serve(place) as server:
        started = time.monotonic()
        with pytest.raises(FatalClose, match=r"4400: cannot open broken\.ipynb"):
            async with connect(
                "jupyter", id="broken.ipynb", url=server.url, token=server.token, timeout=30
            ):
                pass
        assert time.monotonic() - started < 5
    assert place.snapshot() == before


# Credentials and origins


def _credentials(server: JupyterServer) -> list[tuple[str, dict[str, str], str]]:
    """(what, headers, query) that must not let anyone in."""
    token = server.token
    return [
        ("no credentials", {}, ""),
        ("empty token header", {"Authorization": "token "}, ""),
        ("wrong token header", {"Authorization": "token wrong"}, ""),
        ("wrong bearer token", {"Authorization": f"Bearer {token[:-1]}x"}, ""),
        ("token without scheme", {"Authorization": token}, ""),
        ("token in another scheme", {"Authorization": f"Basic {token}"}, ""),
        ("truncated token", {"Authorization": f"token {token[:8]}"}, ""),
        ("token with a suffix", {"Authorization": f"token {token}0"}, ""),
        ("upper-case token", {"Authorization": f"token {token.upper()}"}, ""),
        ("wrong query token", {}, "?token=wrong"),
        ("empty query token", {}, "?token="),
        ("query token twice, last wrong", {}, f"?token={token}&token=wrong"),
        ("forged cookie", {"Cookie": "username-127-0-0-1=forged; _xsrf=x"}, ""),
        ("kernel-looking token", {"Authorization": "token jrk-0-forged"}, ""),
    ]


async def test_missing_and_wrong_credentials_are_refused(place: Place) -> None:
    before = place.snapshot()
    async with serve(place) as server:
        for what, headers, query in _credentials(server):
            for path in ("notes.txt", "nb.ipynb", "state.yroom", "new.txt"):
                INPUTS_TRIED["credentials"] += 1
                request = HTTPRequest(ws_url(server, path) + query, headers=headers)
                assert await refused_status(request) == 403, (what, path)
        assert not server.room_manager.rooms
    assert place.snapshot() == before


FOREIGN_ORIGINS = [
    "https://evil.example",
    "http://127.0.0.1.evil.example",
    "http://localhost.evil.example:8888",
    "null",
    "file://",
    "http://127.0.0.1:1",
    "https://127.0.0.1",
    "chrome-extension://abcdef",
]


async def test_cross_origin_websockets_are_refused_on_the_jupyter_wire(place: Place) -> None:
    before = place.snapshot()
    async with serve(place) as server:
        # A browser's session: the login cookie, which a foreign page would ride on.
        cookie = await login_cookie(server)
        for origin in FOREIGN_ORIGINS:
            for path in ("notes.txt", "nb.ipynb", "new.txt"):
                INPUTS_TRIED["origins"] += 1
                headers = {"Cookie": cookie, "Origin": origin}
                request = HTTPRequest(ws_url(server, path), headers=headers)
                assert await refused_status(request) == 403, origin
        assert place.snapshot() == before
        # The server's own origin, with the same cookie, gets in.
        headers = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{server.port}"}
        request = HTTPRequest(ws_url(server, "notes.txt"), headers=headers)
        assert await refused_status(request) is None


async def test_cross_origin_websockets_are_refused_on_the_websocket_wire(tmp_path: Path) -> None:
    store = tmp_path / "logs"
    port = free_port()
    options = {"host": "127.0.0.1", "port": port, "allowed_origins": ["https://ok.example"]}
    async with bind("websocket", room_factory=LogRoom.factory(store), **options):
        for origin in FOREIGN_ORIGINS:
            INPUTS_TRIED["origins"] += 1
            request = HTTPRequest(f"ws://127.0.0.1:{port}/room", headers={"Origin": origin})
            assert await refused_status(request) == 403, origin
        assert not store.exists()
        request = HTTPRequest(
            f"ws://127.0.0.1:{port}/room", headers={"Origin": "https://ok.example"}
        )
        assert await refused_status(request) is None


# Read-only users


class ReadOnlyAuthorizer(Authorizer):
    """Lets users read, never write."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return action == "read"


def _changes(doc: Doc, path: str, choice: int, payload: str) -> bytes:
    """An update that changes a copy of a room's document the way its kind allows."""
    state = doc.get_state()
    if path.endswith(".ipynb"):
        notebook = Notebook(doc)
        if choice % 3 == 0 or len(notebook) == 0:
            notebook.append_cell(payload)
        elif choice % 3 == 1:
            notebook[0].source = payload
        else:
            notebook.delete_cell(0)
    elif path.endswith(".yroom"):
        if choice % 2:
            doc.get("settings", type=Map)["theme"] = payload
        else:
            doc.get("items", type=Array).append(payload)
    else:
        text = doc.get("source", type=Text)
        if choice % 2 and len(text):
            del text[0 : len(text)]
        text.insert(0, payload)
    return doc.get_update(state)


@pytest.fixture
async def read_only_server(place: Place) -> AsyncIterator[tuple[Place, JupyterServer, Any]]:
    config = {"ServerApp": {"authorizer_class": ReadOnlyAuthorizer}}
    async with serve(place, server_config=config) as server:
        # The rooms open once (and start their history): from then on nothing may change.
        for path in ("notes.txt", "nb.ipynb", "state.yroom"):
            async with connect("jupyter", id=path, url=server.url, token=server.token):
                pass
        await quiet(server)
        yield place, server, place.snapshot()


@fuzz(40)
@given(
    path=st.sampled_from(["notes.txt", "nb.ipynb", "state.yroom", "new.txt"]),
    choice=st.integers(0, 5),
    payload=st.text(min_size=1, max_size=40),
    how=st.sampled_from(["update", "step2", "both"]),
)
async def test_read_only_users_change_nothing(
    read_only_server: tuple[Place, JupyterServer, Any],
    path: str,
    choice: int,
    payload: str,
    how: str,
) -> None:
    place, server, before = read_only_server
    INPUTS_TRIED["read-only updates"] += 1
    connection = await websocket_connect(HTTPRequest(ws_url(server, path), headers=auth(server)))
    try:
        doc = await _synced(connection)
        update = _changes(doc, path, choice, payload)
        if how in ("update", "both"):
            await connection.write_message(sync_update(update), binary=True)
        if how in ("step2", "both"):
            await connection.write_message(sync_step2(update), binary=True)
        # The server answers with a notice; wait for it so the update was handled.
        with anyio.fail_after(5):
            while True:
                message = await connection.read_message()
                assert message is not None
                if isinstance(message, bytes) and b"read-only" in message:
                    break
    finally:
        connection.close()
    await quiet(server)
    # A room opened on a new path keeps a log of its (empty) history, so that a client
    # that edits it offline later merges instead of starting over; the rest is as it was.
    assert _without_new(place.snapshot()) == _without_new(before), path
    for log in place.data.rglob("new.txt.ylog"):
        # The room's own bookkeeping (its path, in the document's state) may be there;
        # none of the user's text is.
        opened = Doc()
        for update in UpdateLog(log).load().updates:
            opened.apply_update(update)
        assert str(opened.get("source", type=Text)) == ""


async def test_read_only_users_see_a_timeline_and_cannot_restore_it(
    read_only_server: tuple[Place, JupyterServer, Any],
) -> None:
    place, server, before = read_only_server
    client = AsyncHTTPClient()
    url = server.url + "api/collaboration/"
    response = await client.fetch(
        url + "timeline/nb.ipynb?format=json&type=notebook", headers=auth(server)
    )
    timeline = json.loads(response.body)
    for action in ("restore", "undo"):
        INPUTS_TRIED["read-only updates"] += 1
        with pytest.raises(HTTPClientError) as refused:
            await client.fetch(
                url + f"undo_redo/{timeline['roomId']}?action={action}&steps=1"
                f"&forkRoom={timeline['forkRoom']}",
                method="PUT",
                body=b"{}",
                headers=auth(server),
            )
        assert refused.value.code == 403
    await quiet(server)
    assert place.snapshot() == before


def _without_new(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {name: entry for name, entry in snapshot.items() if "new.txt" not in name}


async def _synced(connection: WebSocketClientConnection) -> Doc:
    """Do the handshake by hand and return the room's document."""
    doc: Doc = Doc()
    await connection.write_message(sync_step1(doc.get_state()), binary=True)
    with anyio.fail_after(5):
        while True:
            message = await connection.read_message()
            assert isinstance(message, bytes)
            if message[:2] == b"\x00\x01":
                doc.apply_update(parse_message(message).payload)
                return doc


# Oversized messages


@fuzz(30)
@given(
    path=st.sampled_from(["notes.txt", "nb.ipynb", "state.yroom"]),
    size=st.integers(MAX_MESSAGE + 1, 4 * MAX_MESSAGE),
    kind=st.sampled_from(["update", "garbage", "awareness", "text frame"]),
)
async def test_oversized_messages_close_their_sender_and_change_nothing(
    path_server: tuple[Place, JupyterServer, dict[str, Any]], path: str, size: int, kind: str
) -> None:
    place, server, before = path_server
    INPUTS_TRIED["oversized messages"] += 1
    connection = await websocket_connect(HTTPRequest(ws_url(server, path), headers=auth(server)))
    try:
        if kind == "update":
            doc: Doc = Doc()
            doc.get("source", type=Text).insert(0, "x" * size)
            message: bytes | str = sync_update(doc.get_update())
        elif kind == "awareness":
            message = awareness_message(b"\x01\x01\x01" + b"x" * size)
        elif kind == "garbage":
            message = os.urandom(size)
        else:
            message = "x" * size
        await connection.write_message(message, binary=isinstance(message, bytes))
        with anyio.fail_after(5):
            while await connection.read_message() is not None:
                pass
        assert connection.close_code == 1009
    finally:
        connection.close()
    await quiet(server)
    assert place.snapshot(logs=False) == before, (path, kind)
