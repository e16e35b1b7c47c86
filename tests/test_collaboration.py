"""JupyterLab's collaboration API on rooms, spoken by hand (no browser): sessions, the
room socket (y-websocket, RAW saves, close codes), presence, cookie logins, renames,
restarts, and what is not supported."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import pytest
from pycrdt import Array, Awareness, Doc, Map, Text
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_rooms import bind, connect
from jupyter_rooms.jupyter import filerooms
from jupyter_rooms.jupyter.collaboration import (
    CLOSE_BAD_REQUEST,
    CLOSE_NOT_FOUND,
    CLOSE_SESSION,
    CollaborationSessionHandler,
)
from jupyter_rooms.jupyter.documents import NotebookKind
from jupyter_rooms.notebook import Notebook
from jupyter_rooms.protocol import (
    MessageType,
    awareness_message,
    parse_message,
    sync_update,
)
from jupyter_rooms.websocket import ClientChannel

from collaboration_peer import TOKEN, Peer, auth, closed, joined, request, room_socket, session
from helpers import wait_until

pytestmark = pytest.mark.anyio

NOTEBOOK = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    "cells": [
        {
            "cell_type": "code",
            "id": "first",
            "metadata": {},
            "source": "x = 1",
            "outputs": [],
            "execution_count": None,
        }
    ],
}


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Room logs and file ids (jupyter_server_fileid's database) in the test's directory.
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    root = tmp_path / "root"
    (root / "field notes").mkdir(parents=True)
    (root / "field notes" / "day 1.txt").write_text("rain at dawn\n")
    (root / "analysis.ipynb").write_text(json.dumps(NOTEBOOK))
    return root


@asynccontextmanager
async def server_on(root: Path, **options: Any) -> AsyncIterator[Any]:
    options.setdefault("save_delay", 0.2)
    options.setdefault("port", 0)
    async with bind("jupyter", root_dir=root, token=TOKEN, **options) as server:
        yield server


async def test_session_answers_file_id_and_the_rooms_epoch(root: Path) -> None:
    async with server_on(root) as server:
        path = "field notes/day 1.txt"
        status, first = await request(
            server,
            "PUT",
            "api/collaboration/session/" + quote(path, safe=""),
            {"format": "text", "type": "file"},
        )
        assert status == 201
        assert first["format"] == "text" and first["type"] == "file"
        second = await session(server, path, "text", "file")
        assert second["fileId"] == first["fileId"]
        rooms = (await request(server, "GET", "api/rooms"))[1]["rooms"]
        assert [(room["id"], room["epoch"]) for room in rooms] == [(path, first["sessionId"])]

        cases = [
            ("missing.txt", {"format": "text", "type": "file"}, 404),
            ("field notes", {"format": "text", "type": "file"}, 400),
            ("..%2Fetc%2Fpasswd", {"format": "text", "type": "file"}, 400),
            ("analysis.ipynb", {"format": "json"}, 400),
            ("analysis.ipynb", ["json", "notebook"], 400),
            # A path of the contents API may start at the root (the document timeline's
            # session request does).
            ("%2Fanalysis.ipynb", {"format": "json", "type": "notebook"}, 201),
        ]
        for where, body, expected in cases:
            status, answer = await request(
                server, "PUT", "api/collaboration/session/" + quote(where, safe="%"), body
            )
            assert status == expected, (where, answer)
        status, _ = await request(
            server, "PUT", "api/collaboration/session/analysis.ipynb", {}, headers={}
        )
        assert status == 403


async def test_a_new_rooms_session_is_answered_before_its_document_is_built(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A room with no history yet is promised its epoch: the page's request is answered
    # once the file is read, and the room then opens with that epoch.
    events: list[str] = []
    build = NotebookKind.update

    def update(self: NotebookKind, doc: Doc, old: Any, new: Any) -> None:
        events.append("built")
        build(self, doc, old, new)

    def on_finish(self: Any) -> None:
        events.append("answered")

    monkeypatch.setattr(NotebookKind, "update", update)
    monkeypatch.setattr(CollaborationSessionHandler, "on_finish", on_finish)
    async with server_on(root) as server:
        answers: list[dict[str, Any]] = []

        async def ask() -> None:
            answers.append(await session(server, "analysis.ipynb", "json", "notebook"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            tg.start_soon(ask)
        assert events == ["answered", "built", "answered"] or events[:2] == [
            "answered",
            "answered",
        ], events
        assert answers[0]["sessionId"] == answers[1]["sessionId"]
        page = await joined(server, "analysis.ipynb", "json", "notebook")
        assert [cell.source for cell in Notebook(page.doc)] == ["x = 1"]
        rooms = (await request(server, "GET", "api/rooms"))[1]["rooms"]
        assert [room["epoch"] for room in rooms] == [answers[0]["sessionId"]]
        # Reopened, the room has the epoch its history has.
        await page.channel.close()
        await server.room_manager.close_room("analysis.ipynb")
        again = await session(server, "analysis.ipynb", "json", "notebook")
        assert again["sessionId"] == answers[0]["sessionId"]


async def test_the_page_and_the_kernel_share_one_room(root: Path) -> None:
    async with server_on(root) as server:
        page = await joined(server, "analysis.ipynb", "json", "notebook")
        async with connect("jupyter", id="analysis.ipynb", url=server.url, token=TOKEN) as kernel:
            rooms = (await request(server, "GET", "api/rooms"))[1]["rooms"]
            assert [(room["id"], room["clients"]) for room in rooms] == [("analysis.ipynb", 2)]
            notebook = Notebook(kernel.doc)
            notebook.append_cell("y = 2")
            notebook[0].edit(0, 1, "z")
            page_notebook = Notebook(page.doc)
            await page.pump(lambda: [c.source for c in page_notebook] == ["z = 1", "y = 2"])

            await page.edit(lambda doc: Notebook(doc)[1].edit(5, 5, " + 40"))
            await wait_until(lambda: notebook[1].source == "y = 2 + 40", within=5)
        # A plain Yjs client is never sent our own notices, which it would log as errors.
        assert page.control == []


async def test_saves_asked_for_by_the_page(root: Path) -> None:
    async with server_on(root, save_delay=60.0) as server:
        page = await joined(server, "analysis.ipynb", "json", "notebook")
        await page.edit(lambda doc: Notebook(doc).append_cell("print('saved')"))
        reply = await page.save(1)
        assert reply == {"type": "save", "responseTo": 1, "status": "success"}
        saved = json.loads((root / "analysis.ipynb").read_text())
        assert ["".join(cell["source"]) for cell in saved["cells"]] == ["x = 1", "print('saved')"]
        assert saved["cells"][0]["id"] == "first"
        assert all("execution_state" not in cell for cell in saved["cells"])
        assert saved["metadata"]["kernelspec"]["name"] == "python3"
        # The page learns the hash the contents API gives for the file, and that it is clean.
        _, model = await request(server, "GET", "api/contents/analysis.ipynb?content=0&hash=1")
        state = page.doc.get("state", type=Map)
        await page.pump(lambda: state.get("hash") == model["hash"])
        assert state.get("dirty") is False
        # Nothing changed since: saving again succeeds and writes nothing.
        mtime = (root / "analysis.ipynb").stat().st_mtime_ns
        assert (await page.save(2))["status"] == "success"
        assert (root / "analysis.ipynb").stat().st_mtime_ns == mtime

        # A notebook that cannot be valid is not written, and the save fails.
        def break_it(doc: Doc) -> None:
            doc.get("cells", type=Array)[1]["cell_type"] = "bogus"

        await page.edit(break_it)
        assert (await page.save(3))["status"] == "failed"
        assert json.loads((root / "analysis.ipynb").read_text()) == saved
        assert page.control == []


async def test_a_notebook_opens_while_the_page_sets_up(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file's reading is held until the page's socket is in and has asked for the
    # document: the session is answered without waiting for it, the socket is taken
    # while the room opens, and the request that waits in it is answered with the whole
    # notebook once the room is open.
    release = threading.Event()
    read_file = filerooms._read_notebook_file

    def held(*args: Any) -> Any:
        release.wait(10)
        return read_file(*args)

    monkeypatch.setattr(filerooms, "_read_notebook_file", held)
    async with server_on(root) as server:
        try:
            answer = await session(server, "analysis.ipynb", "json", "notebook")
            channel = await room_socket(
                server, f"json:notebook:{answer['fileId']}", session_id=answer["sessionId"]
            )
            rooms = server.room_manager
            assert rooms.has("analysis.ipynb") and "analysis.ipynb" not in rooms.rooms
            peer = Peer(channel)
            await peer.start()
        finally:
            release.set()
        await peer.pump(lambda: peer.synced)
        assert [cell.source for cell in Notebook(peer.doc)] == ["x = 1"]
        assert rooms.rooms["analysis.ipynb"].epoch == answer["sessionId"]


async def test_close_codes_the_front_end_knows(root: Path) -> None:
    (root / "broken.ipynb").write_text("{ not json")
    async with server_on(root) as server:
        text = await session(server, "field notes/day 1.txt", "text", "file")
        notebook = await session(server, "analysis.ipynb", "json", "notebook")
        cases = [
            ("text:file:no-such-id", CLOSE_NOT_FOUND),
            (f"json:spreadsheet:{notebook['fileId']}", CLOSE_BAD_REQUEST),
            (f"text:file:{notebook['fileId']}", CLOSE_BAD_REQUEST),
            (f"json:notebook:{text['fileId']}", CLOSE_BAD_REQUEST),
        ]
        for room, code in cases:
            assert (await closed(await room_socket(server, room)))[0] == code, room
        # A file that cannot be read: its session is answered at once (the server reads
        # the file while the page sets up), and the room's socket says why it cannot
        # be opened, which the page shows (a failed session request it only logs). The
        # reason is cut to what a close frame carries.
        broken = await session(server, "broken.ipynb", "json", "notebook")
        channel = await room_socket(
            server, f"json:notebook:{broken['fileId']}", session_id=broken["sessionId"]
        )
        code, reason = await closed(channel)
        assert code == CLOSE_BAD_REQUEST
        assert reason.startswith("cannot open broken.ipynb") and "JSON" in reason, reason
        assert len(reason.encode()) <= 123
        assert (root / "broken.ipynb").read_text() == "{ not json"

        channel = await room_socket(
            server, f"text:file:{text['fileId']}", session_id="an-older-epoch"
        )
        code, reason = await closed(channel)
        assert code == CLOSE_SESSION
        assert json.loads(reason) == {
            "reason": "unknown_session",
            "sessionId": "an-older-epoch",
            "reloadable": True,
        }


async def test_a_restart_merges_unless_the_epoch_changed(root: Path, tmp_path: Path) -> None:
    async with server_on(root) as server:
        page = await joined(server, "analysis.ipynb", "json", "notebook")
        answer = await session(server, "analysis.ipynb", "json", "notebook")
        await page.edit(lambda doc: Notebook(doc).append_cell("before the restart"))
        await page.save(1)
    port = server.port
    room = f"json:notebook:{answer['fileId']}"
    async with server_on(root, port=port) as server:
        # The page's socket comes back with its session id: same history, it merges.
        channel = await room_socket(server, room, session_id=answer["sessionId"])
        page.channel = channel
        page.synced = False
        with anyio.fail_after(5):
            await page.sync()
        await page.edit(lambda doc: Notebook(doc).append_cell("after the restart"))
        await page.save(2)
        saved = json.loads((root / "analysis.ipynb").read_text())
        assert ["".join(cell["source"]) for cell in saved["cells"]] == [
            "x = 1",
            "before the restart",
            "after the restart",
        ]
    # The room's history is lost: a new epoch; the page is told to reload.
    shutil.rmtree(tmp_path / "data" / "rooms")
    async with server_on(root, port=port) as server:
        channel = await room_socket(server, room, session_id=answer["sessionId"])
        code, reason = await closed(channel)
        assert code == CLOSE_SESSION
        assert json.loads(reason)["reloadable"] is True
        fresh = await session(server, "analysis.ipynb", "json", "notebook")
        assert fresh["fileId"] == answer["fileId"]
        assert fresh["sessionId"] != answer["sessionId"]


async def test_global_awareness_with_a_cookie_login(root: Path) -> None:
    async with server_on(root) as server:
        # The page logs in with the token once; its sockets then carry only the cookie.
        response = await AsyncHTTPClient().fetch(server.url + f"api/status?token={TOKEN}")
        cookies = [c.split(";")[0] for c in response.headers.get_list("Set-Cookie")]
        cookie = {"Cookie": "; ".join(cookies)}
        room = "JupyterLab:globalAwareness"
        with pytest.raises(HTTPClientError) as refused:
            await room_socket(server, room, headers={})
        assert refused.value.code == 403

        alice, bob = (
            Peer(await room_socket(server, room, headers=cookie)),
            Peer(await room_socket(server, room, headers=cookie)),
        )
        for peer in (alice, bob):
            with anyio.fail_after(5):
                await peer.sync()
        awareness = Awareness(Doc())
        awareness.set_local_state({"user": {"name": "alice"}, "documents": ["analysis.ipynb"]})
        update = awareness.encode_awareness_update([awareness.client_id])
        await alice.channel.send(awareness_message(update))
        seen = Awareness(Doc())

        def on_message(data: bytes) -> None:
            message = parse_message(data)
            if message.type == MessageType.AWARENESS:
                seen.apply_awareness_update(message.payload, "server")

        with anyio.fail_after(5):
            while awareness.client_id not in seen.states:
                on_message(await bob.channel.recv())
        assert seen.states[awareness.client_id]["user"] == {"name": "alice"}
        # Presence only: the room's document takes no changes.
        await alice.edit(lambda doc: doc.get("source", type=Text).insert(0, "no"))
        with anyio.move_on_after(0.3):
            await bob.pump(lambda: False)
        assert str(bob.doc.get("source", type=Text)) == ""

        # The cookie opens documents' rooms too.
        answer = await session(server, "analysis.ipynb", "json", "notebook")
        channel = await room_socket(server, f"json:notebook:{answer['fileId']}", headers=cookie)
        peer = Peer(channel)
        with anyio.fail_after(5):
            await peer.sync()
        assert Notebook(peer.doc)[0].source == "x = 1"


async def test_a_renamed_file_keeps_its_id_and_room(root: Path) -> None:
    async with server_on(root) as server:
        page = await joined(server, "field notes/day 1.txt", "text", "file")
        first = await session(server, "field notes/day 1.txt", "text", "file")
        status, _ = await request(
            server,
            "PATCH",
            "api/contents/" + quote("field notes/day 1.txt"),
            {"path": "field notes/monday.txt"},
        )
        assert status == 200
        state = page.doc.get("state", type=Map)
        await page.pump(lambda: state.get("path") == "field notes/monday.txt")
        again = await session(server, "field notes/monday.txt", "text", "file")
        assert again["fileId"] == first["fileId"]
        assert again["sessionId"] == first["sessionId"]
        other = Peer(await room_socket(server, f"text:file:{again['fileId']}"))
        with anyio.fail_after(5):
            await other.sync()
        rooms = (await request(server, "GET", "api/rooms"))[1]["rooms"]
        assert [(room["id"], room["clients"]) for room in rooms] == [("field notes/monday.txt", 2)]
        await page.edit(lambda doc: doc.get("source", type=Text).insert(0, "Monday: "))
        await other.pump(lambda: str(other.doc.get("source", type=Text)).startswith("Monday: "))


async def test_extensions_fork_a_room_edit_the_fork_and_merge_it_back(root: Path) -> None:
    path = "field notes/day 1.txt"
    async with server_on(root, save_delay=0.1) as server:
        page = await joined(server, path, "text", "file")
        answer = await session(server, path, "text", "file")
        document = f"text:file:{answer['fileId']}"
        events_url = server.url.replace("http", "ws", 1) + "api/events/subscribe"
        events = await websocket_connect(HTTPRequest(events_url, headers=auth(server)))
        text = lambda peer: str(peer.doc.get("source", type=Text))  # noqa: E731

        async def next_event() -> dict[str, Any]:
            with anyio.fail_after(5):
                while True:
                    message = await events.read_message()
                    assert isinstance(message, str)
                    event: dict[str, Any] = json.loads(message)
                    if event.get("schema_id", "").endswith("/jupyter_collaboration/fork/v1"):
                        return event

        status, made = await request(
            server,
            "PUT",
            f"api/collaboration/fork/{document}",
            {"title": "a suggestion", "description": "from a helper", "synchronize": True},
        )
        assert status == 201, made
        fork_id = made["fork_roomid"]
        info = {
            "root_roomid": document,
            "synchronize": True,
            "title": "a suggestion",
            "description": "from a helper",
        }
        assert made["fork_info"] == info and made["sessionId"] == answer["sessionId"]
        event = await next_event()
        assert (event["action"], event["fork_roomid"], event["fork_info"]) == (
            "create",
            fork_id,
            info,
        )
        assert (await request(server, "GET", f"api/collaboration/fork/{document}")) == (
            200,
            {fork_id: info},
        )

        helper = Peer(await room_socket(server, fork_id, session_id=made["sessionId"]))
        with anyio.fail_after(5):
            await helper.sync()
        assert text(helper) == "rain at dawn\n"
        # The fork follows the room; the room does not follow the fork.
        await page.edit(lambda doc: doc.get("source", type=Text).insert(0, "Monday: "))
        await helper.pump(lambda: text(helper) == "Monday: rain at dawn\n")
        await helper.edit(lambda doc: doc.get("source", type=Text).insert(8, "light "))
        await anyio.sleep(0.3)
        assert text(page) == "Monday: rain at dawn\n"
        assert (root / path).read_text() == "Monday: rain at dawn\n"

        status, deleted = await request(
            server, "DELETE", f"api/collaboration/fork/{fork_id}?merge=true"
        )
        assert status == 200, deleted
        await page.pump(lambda: text(page) == "Monday: light rain at dawn\n")
        await wait_until(lambda: (root / path).read_text() == "Monday: light rain at dawn\n")
        assert (await next_event())["action"] == "delete"
        assert (await request(server, "GET", f"api/collaboration/fork/{document}")) == (200, {})
        assert (await closed(helper.channel))[0] is not None

        # Deleted without merging: the room keeps none of it.
        status, made = await request(server, "PUT", f"api/collaboration/fork/{document}", {})
        assert status == 201 and made["fork_info"]["synchronize"] is False
        helper = Peer(await room_socket(server, made["fork_roomid"]))
        with anyio.fail_after(5):
            await helper.sync()
        await helper.edit(lambda doc: doc.get("source", type=Text).insert(0, "DRAFT "))
        status, _ = await request(
            server, "DELETE", f"api/collaboration/fork/{made['fork_roomid']}?merge=false"
        )
        assert status == 200
        await anyio.sleep(0.3)
        assert text(page) == "Monday: light rain at dawn\n"
        events.close()

        status, timeline = await request(
            server, "GET", "api/collaboration/timeline/analysis.ipynb?format=json&type=notebook"
        )
        assert status == 200
        for method, where, body, expected in [
            ("PUT", "api/collaboration/fork/nonsense", {}, 400),
            ("PUT", "api/collaboration/fork/text:file:no-such-id", {}, 404),
            ("PUT", f"api/collaboration/fork/json:notebook:{answer['fileId']}", {}, 400),
            ("PUT", f"api/collaboration/fork/{document}", {"synchronize": "yes"}, 400),
            ("PUT", f"api/collaboration/fork/{document}", {"title": 3}, 400),
            ("PUT", f"api/collaboration/fork/{document}", ["a"], 400),
            ("DELETE", f"api/collaboration/fork/{made['fork_roomid']}", None, 404),
            ("DELETE", f"api/collaboration/fork/{timeline['forkRoom']}", None, 404),
            ("DELETE", "api/collaboration/fork/x?merge=maybe", None, 400),
        ]:
            status, answer_ = await request(server, method, where, body)
            assert status == expected, (method, where, answer_)

        # The file is deleted under a fork: merging it would go into another history.
        status, made = await request(server, "PUT", f"api/collaboration/fork/{document}", {})
        assert status == 201
        status, _ = await request(server, "DELETE", "api/contents/" + quote(path))
        assert status == 204
        fork_url = f"api/collaboration/fork/{made['fork_roomid']}"
        assert (await request(server, "DELETE", fork_url + "?merge=true"))[0] == 409
        assert (await request(server, "DELETE", fork_url + "?merge=false"))[0] == 200
        assert not (root / path).exists()


async def test_the_timeline_steps_through_the_history_and_restores_a_version(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each change its own step (the log stamps at most once a second otherwise).
    monkeypatch.setattr(filerooms, "STAMP_EVERY", 0.0)
    path = "field notes/day 1.txt"
    async with server_on(root, save_delay=0.1) as server:
        page = await joined(server, path, "text", "file")
        text = lambda peer: str(peer.doc.get("source", type=Text))  # noqa: E731
        for word in ["wind ", "hail ", "sun "]:
            await page.edit(lambda doc, word=word: doc.get("source", type=Text).insert(0, word))
            await anyio.sleep(0.05)
        answer = await session(server, path, "text", "file")
        status, timeline = await request(
            server,
            "GET",
            # As the page asks: the path joined in (a browser encodes the spaces).
            "api/collaboration/timeline/field%20notes/day%201.txt?format=text&&type=file",
        )
        assert status == 200, timeline
        assert timeline["roomId"] == f"text:file:{answer['fileId']}"
        assert timeline["sessionId"] == answer["sessionId"]
        # The file as the room first read it, then one step per change.
        assert len(timeline["timestamps"]) == 4
        assert timeline["timestamps"] == sorted(timeline["timestamps"])
        fork_id = timeline["forkRoom"]
        # The page's document goes to the fork (as JupyterLab's provider does: a
        # socket of the fork's id, with the session id).
        view = Peer(await room_socket(server, fork_id, session_id=timeline["sessionId"]))
        with anyio.fail_after(5):
            await view.sync()
        assert text(view) == "sun hail wind rain at dawn\n"

        async def move(action: str, steps: int, expected: str) -> dict[str, Any]:
            status, reply = await request(
                server,
                "PUT",
                f"api/collaboration/undo_redo/{quote(timeline['roomId'], safe='')}"
                f"?action={action}&&steps={steps}&&forkRoom={fork_id}",
                {},
            )
            assert status == 200, reply
            await view.pump(lambda: text(view) == expected)
            return dict(reply)

        assert (await move("undo", 2, "wind rain at dawn\n"))["step"] == 1
        # Never before the file's own version, nor past the newest.
        reply = await move("undo", 5, "rain at dawn\n")
        assert (reply["step"], reply["steps"]) == (0, 4)
        assert "error" in await move("undo", 1, "rain at dawn\n")
        assert (await move("redo", 2, "hail wind rain at dawn\n"))["step"] == 2
        # Moving the fork leaves the room alone.
        await anyio.sleep(0.2)
        assert text(page) == "sun hail wind rain at dawn\n"
        assert (root / path).read_text() == "sun hail wind rain at dawn\n"

        status, reply = await request(
            server,
            "PUT",
            f"api/collaboration/undo_redo/{quote(timeline['roomId'], safe='')}"
            f"?action=restore&steps=0&forkRoom={fork_id}",
            {},
        )
        assert (status, reply["code"]) == (200, 200), reply
        await page.pump(lambda: text(page) == "hail wind rain at dawn\n")
        await wait_until(lambda: (root / path).read_text() == "hail wind rain at dawn\n")
        # Restored once: the fork takes no more moves.
        status, reply = await request(
            server,
            "PUT",
            f"api/collaboration/undo_redo/{quote(timeline['roomId'], safe='')}"
            f"?action=undo&steps=1&forkRoom={fork_id}",
            {},
        )
        assert status == 409, reply


async def test_a_fork_closes_a_while_after_its_page_left(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filerooms, "FORK_LINGER", 0.3)
    async with server_on(root) as server:
        await joined(server, "analysis.ipynb", "json", "notebook")
        timeline_path = "api/collaboration/timeline/analysis.ipynb?format=json&type=notebook"

        async def undo(timeline: dict[str, Any]) -> int:
            status, _ = await request(
                server,
                "PUT",
                f"api/collaboration/undo_redo/{quote(timeline['roomId'], safe='')}"
                f"?action=undo&steps=1&forkRoom={timeline['forkRoom']}",
                {},
            )
            return status

        # Never joined: it waits for its page, then goes.
        status, unjoined = await request(server, "GET", timeline_path)
        assert status == 200
        # Joined: it stays while the page is there, and goes after it left.
        status, timeline = await request(server, "GET", timeline_path)
        view = Peer(
            await room_socket(server, timeline["forkRoom"], session_id=timeline["sessionId"])
        )
        with anyio.fail_after(5):
            await view.sync()
        with anyio.fail_after(5):
            while await undo(unjoined) != 404:
                await anyio.sleep(0.1)
        # Well past the linger, the joined one is still there.
        assert await undo(timeline) == 200
        await view.channel.close()
        with anyio.fail_after(5):
            while await undo(timeline) != 404:
                await anyio.sleep(0.1)


async def test_the_timeline_refuses_bad_requests_plainly(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filerooms, "MAX_FORKS", 1)
    async with server_on(root) as server:
        page = await joined(server, "analysis.ipynb", "json", "notebook")
        other = await session(server, "field notes/day 1.txt", "text", "file")
        # An empty file nobody wrote in: no step to show.
        (root / "empty.txt").write_text("")
        status, answer = await request(
            server, "GET", "api/collaboration/timeline/empty.txt?format=text&type=file"
        )
        assert status == 409, answer
        status, timeline = await request(
            server, "GET", "api/collaboration/timeline/analysis.ipynb?format=json&type=notebook"
        )
        assert status == 200, timeline
        assert len(timeline["timestamps"]) == 1
        undo = "api/collaboration/undo_redo/{}?action={}&steps={}&forkRoom={}"
        room, fork_id = quote(timeline["roomId"], safe=""), timeline["forkRoom"]
        cases = [
            ("GET", "api/collaboration/timeline/missing.ipynb?format=json&type=notebook", 404),
            ("GET", "api/collaboration/timeline/analysis.ipynb?format=text&type=file", 400),
            ("GET", "api/collaboration/timeline/analysis.ipynb", 400),
            ("GET", "api/collaboration/timeline/..%2Fetc%2Fpasswd?format=text&type=file", 400),
            ("PUT", undo.format(room, "undo", 1, "no-such-fork"), 404),
            ("PUT", undo.format(room, "jump", 1, fork_id), 400),
            ("PUT", undo.format(room, "undo", "many", fork_id), 400),
            ("PUT", undo.format(room, "undo", -1, fork_id), 400),
            ("PUT", undo.format(f"text:file:{other['fileId']}", "restore", 0, fork_id), 404),
            # Each fork is a copy of its document: a server keeps a few at most.
            ("GET", "api/collaboration/timeline/analysis.ipynb?format=json&type=notebook", 503),
        ]
        for method, path, expected in cases:
            status, answer = await request(server, method, path, {} if method == "PUT" else None)
            assert status == expected, (path, answer)
        status, answer = await request(
            server,
            "GET",
            "api/collaboration/timeline/analysis.ipynb?format=json&type=notebook",
            headers={},
        )
        assert status == 403
        # Nothing of that changed the notebook.
        assert Notebook(page.doc).to_dict()["cells"][0]["source"] == "x = 1"


async def test_changes_that_cannot_be_applied_are_reported_as_a_conflict(root: Path) -> None:
    async with server_on(root) as server:
        page = await joined(server, "field notes/day 1.txt", "text", "file")
        await page.channel.send(sync_update(b"\x05\xff\xff not an update"))
        await page.pump(lambda: {"type": "conflict"} in page.raw)
        # The page stays connected, and its next changes are taken.
        await page.edit(lambda doc: doc.get("source", type=Text).insert(0, "still here: "))
        async with connect(
            "jupyter", id="field notes/day 1.txt", url=server.url, token=TOKEN
        ) as kernel:
            text = kernel.doc.get("source", type=Text)
            await wait_until(lambda: str(text).startswith("still here: "), within=5)
        # A client of api/rooms is disconnected, as for any broken message.
        url = server.url.replace("http", "ws", 1) + "api/rooms/" + quote("field notes/day 1.txt")
        connection = await websocket_connect(HTTPRequest(url, headers=auth(server)))
        other = Peer(ClientChannel(connection, "day 1.txt"))
        with anyio.fail_after(5):
            await other.sync()
        await other.channel.send(sync_update(b"\x05\xff\xff not an update"))
        assert (await closed(other.channel))[0] == 1002


async def test_autosave_as_the_pages_say(root: Path) -> None:
    async with server_on(root) as server:
        page = await joined(server, "field notes/day 1.txt", "text", "file")
        presence = Awareness(page.doc)

        async def wish(autosave: bool) -> None:
            presence.set_local_state({"user": {"name": "ada"}, "autosave": autosave})
            update = presence.encode_awareness_update([presence.client_id])
            await page.channel.send(awareness_message(update))

        await wish(False)
        await page.edit(lambda doc: doc.get("source", type=Text).insert(0, "draft: "))
        path = root / "field notes" / "day 1.txt"
        # Several save delays go by: the file is left alone...
        with anyio.move_on_after(1.0):
            await page.pump(lambda: False)
        assert path.read_text() == "rain at dawn\n"
        # ...until the person saves.
        assert (await page.save(1))["status"] == "success"
        assert path.read_text() == "draft: rain at dawn\n"

        await wish(True)
        await page.edit(lambda doc: doc.get("source", type=Text).insert(0, "final "))
        await wait_until(lambda: path.read_text() == "final draft: rain at dawn\n", within=5)
