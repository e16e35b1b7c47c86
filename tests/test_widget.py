"""The kernel side of RoomWidget: it relays a room's document between the client and the
browser, both ways, and reports presence and connection status.

The browser's end is played by `Frontend`: a pycrdt document that speaks the widget's
message protocol over a comm (the `comm` package's own `BaseComm`, whose transport is
a list here instead of a kernel's iopub socket), as the bundled JavaScript does over
a real one. The real browser is in test_widget_browser.py.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import comm
import pytest
from comm.base_comm import BaseComm
from jupyter_ydoc import YNotebook
from pycrdt import Doc, Map, Text, TransactionEvent

from jupyter_rooms import ClientWire, bind, connect
from jupyter_rooms.widget import RoomWidget, widget_for

from faults import Proxy
from helpers import free_port

pytestmark = pytest.mark.anyio

FROM_KERNEL = "kernel"


class Frontend:
    """The browser's end of one widget: its copy of the document, synced over the comm."""

    def __init__(self) -> None:
        self.doc: Doc = Doc()
        self.comm: FrontendComm | None = None
        self.received: list[tuple[dict[str, Any], list[bytes]]] = []
        self.synced = False
        # Hand messages to the kernel on a thread of their own, as ipykernel does when it
        # runs comm messages on a subshell.
        self.on_another_thread = False
        self._applying = False
        self.doc.observe(self._on_local_change)

    def attach(self, widget_comm: FrontendComm) -> None:
        self.comm = widget_comm

    def sync(self) -> None:
        self.send({"type": "sync", "nonce": "n1"}, [self.doc.get_state()])

    def send(self, content: dict[str, Any], buffers: list[bytes]) -> None:
        assert self.comm is not None
        msg = {
            "content": {"data": {"method": "custom", "content": content}},
            "buffers": [memoryview(b) for b in buffers],
        }
        if self.on_another_thread:
            thread = threading.Thread(target=self.comm.handle_msg, args=(msg,))
            thread.start()
            thread.join()
        else:
            self.comm.handle_msg(msg)

    def deliver(self, msg_type: str, data: dict[str, Any], buffers: list[bytes]) -> None:
        if msg_type != "comm_msg" or data.get("method") != "custom":
            return
        content = data["content"]
        self.received.append((content, buffers))
        if content["type"] == "reset":
            # The room's history started anew: a new copy, not a merge into the old one.
            self.doc = Doc()
            self.doc.observe(self._on_local_change)
        self._apply(buffers[0])
        if content["type"] == "sync" and content.get("nonce") == "n1":
            missing = self.doc.get_update(buffers[1])
            if missing != b"\x00\x00":
                self.send({"type": "update"}, [missing])
            self.synced = True

    def _apply(self, update: bytes) -> None:
        self._applying = True
        try:
            self.doc.apply_update(update)
        finally:
            self._applying = False

    def _on_local_change(self, event: TransactionEvent) -> None:
        if not self._applying and self.comm is not None and self.synced:
            self.send({"type": "update"}, [event.update])


class FrontendComm(BaseComm):
    """A comm whose messages go to a `Frontend` instead of a kernel's iopub socket."""

    def __init__(self, frontend: Frontend, **kwargs: Any) -> None:
        self.frontend = frontend
        super().__init__(**kwargs)
        frontend.attach(self)

    def publish_msg(
        self,
        msg_type: str,
        data: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        buffers: list[bytes] | None = None,
        **keys: Any,
    ) -> None:
        self.frontend.deliver(msg_type, data or {}, [bytes(b) for b in buffers or []])


@pytest.fixture
def frontends(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Frontend]]:
    """The front ends of the widgets the test creates, one each, in order."""
    created: list[Frontend] = []

    def create_comm(*args: Any, **kwargs: Any) -> BaseComm:
        frontend = Frontend()
        # Each widget's layout is a widget of its own, with a comm of its own.
        if kwargs.get("data", {}).get("state", {}).get("_model_name") == "AnyModel":
            created.append(frontend)
        return FrontendComm(frontend, *args, **kwargs)

    monkeypatch.setattr(comm, "create_comm", create_comm)
    yield created


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait until `condition()` holds, failing after `seconds`: a bounded poll of state
    that the clients' own tasks change."""
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.005)


@asynccontextmanager
async def room_pair(wire: str, doc: Doc | None = None) -> AsyncIterator[tuple[ClientWire, Any]]:
    """Two clients of one room: the widget's (`alice`) and another (`bob`, holding `doc`)."""
    async with bind(wire) as server:
        options = {"server": server} if wire == "memory" else {"port": server.port}  # type: ignore[attr-defined]
        async with (
            connect(wire, id="room", doc=doc, **options) as bob,
            connect(wire, id="room", **options) as alice,
        ):
            yield alice, bob


@pytest.mark.parametrize("wire", ["memory", "websocket"])
async def test_text_room_relays_both_ways(wire: str, frontends: list[Frontend]) -> None:
    doc = Doc()
    doc.get("source", type=Text).insert(0, "hello")
    async with room_pair(wire, doc) as (alice, bob):
        widget = RoomWidget(alice)
        (frontend,) = frontends
        frontend.sync()
        assert frontend.synced
        source = frontend.doc.get("source", type=Text)
        assert str(source) == "hello"

        bob.doc.get("source", type=Text).insert(5, " world")
        await until(lambda: str(source) == "hello world")

        source.insert(0, ">> ")
        bob_source = bob.doc.get("source", type=Text)
        await until(lambda: str(bob_source) == ">> hello world")
        assert str(alice.doc.get("source", type=Text)) == ">> hello world"

        # Typing in the browser while someone else types at the same place merges.
        source.insert(len(str(source)), "!")
        bob_source.insert(3, "[bob]")
        expected = ">> [bob]hello world!"
        await until(lambda: str(source) == expected and str(bob_source) == expected)
        widget.close()


@pytest.mark.parametrize("wire", ["memory", "websocket"])
async def test_notebook_room_relays_cells_and_outputs(wire: str, frontends: list[Frontend]) -> None:
    notebook = YNotebook()
    notebook.set(
        {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
            "cells": [
                {"cell_type": "markdown", "id": "a", "source": "# Title", "metadata": {}},
                {
                    "cell_type": "code",
                    "id": "b",
                    "source": "print(1)",
                    "metadata": {},
                    "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}],
                    "execution_count": 1,
                },
            ],
        }
    )
    async with room_pair(wire, notebook.ydoc) as (alice, _bob):
        RoomWidget(alice)
        (frontend,) = frontends
        frontend.sync()
        seen = YNotebook(frontend.doc)
        assert [c["source"] for c in seen.get()["cells"]] == ["# Title", "print(1)"]
        assert seen.get()["cells"][1]["outputs"][0]["text"] == "1\n"

        # A cell appended elsewhere shows up; an edit of a cell in the browser goes back.
        notebook.append_cell({"cell_type": "code", "source": "x = 2", "metadata": {}})
        await until(lambda: seen.cell_number == 3)
        seen.ycells[1]["source"].insert(0, "# run\n")
        await until(lambda: notebook.get_cell(1)["source"] == "# run\nprint(1)")


async def test_edits_made_before_the_first_sync_reach_the_room(
    frontends: list[Frontend],
) -> None:
    async with room_pair("memory") as (alice, bob):
        RoomWidget(alice)
        (frontend,) = frontends
        frontend.doc.get("notes", type=Map)["from"] = "browser"
        frontend.sync()
        notes = bob.doc.get("notes", type=Map)
        await until(lambda: notes.get("from") == "browser")


async def test_messages_handled_on_another_thread_are_applied_on_the_clients_loop(
    frontends: list[Frontend],
) -> None:
    # ipykernel handles comm messages on a subshell's thread when the front end asks it
    # to; the client's document must still only change on the client's own loop.
    async with room_pair("websocket") as (alice, bob):
        RoomWidget(alice)
        (frontend,) = frontends
        threads: list[int] = []
        alice.doc.observe(lambda event: threads.append(threading.get_ident()))
        frontend.on_another_thread = True
        frontend.sync()
        await until(lambda: frontend.synced)
        source = frontend.doc.get("source", type=Text)
        for char in "typed":
            source.insert(len(str(source)), char)
        bob_source = bob.doc.get("source", type=Text)
        await until(lambda: str(bob_source) == "typed")
        assert threads and set(threads) == {threading.get_ident()}


async def test_every_view_gets_the_changes_of_the_others(frontends: list[Frontend]) -> None:
    async with room_pair("memory") as (alice, bob):
        first = RoomWidget(alice)
        second = RoomWidget(alice)
        one, two = frontends
        one.sync()
        two.sync()
        one.doc.get("source", type=Text).insert(0, "typed in one")
        assert str(two.doc.get("source", type=Text)) == "typed in one"
        bob_source = bob.doc.get("source", type=Text)
        await until(lambda: str(bob_source) == "typed in one")
        first.close()
        second.close()


async def test_presence_and_status(frontends: list[Frontend]) -> None:
    stop = anyio.Event()

    async def serve(*, task_status: anyio.abc.TaskStatus[int]) -> None:
        async with bind("websocket") as server:
            task_status.started(server.port)  # type: ignore[attr-defined]
            await stop.wait()

    async with anyio.create_task_group() as tg:
        port = await tg.start(serve)
        async with connect("websocket", id="room", port=port, reconnect=False) as alice:
            alice.awareness.set_local_state({"user": {"name": "alice"}})
            widget = RoomWidget(alice)
            assert widget.status == "synchronized"
            assert widget.peers == []
            async with connect("websocket", id="room", port=port) as bob:
                bob.awareness.set_local_state({"user": {"name": "bob", "color": "#e91e63"}})
                bob_id = bob.awareness.client_id
                await until(lambda: widget.peers != [])
                assert widget.peers == [{"id": bob_id, "name": "bob", "color": "#e91e63"}]
                async with connect("websocket", id="room", port=port) as carol:
                    carol.awareness.set_local_state({"cursor": 3})
                    await until(lambda: len(widget.peers) == 2)
                    names = {p["name"] for p in widget.peers}
                    assert names == {"bob", f"client {carol.awareness.client_id}"}
            await until(lambda: widget.peers == [])
            stop.set()
            await until(lambda: widget.status == "disconnected")
        assert widget.status == "closed"


@pytest.mark.parametrize(
    ("color", "shown"),
    [
        ("#e91e63", "#e91e63"),
        ("rgb(3, 169, 244)", "rgb(3, 169, 244)"),
        ("var(--jp-collaborator-color3)", "var(--jp-collaborator-color3)"),
        ("teal", "teal"),
        # What the page would load, or apply beyond the peer's chip.
        ("url(http://example.com/track.png)", ""),
        ("red; background-image: url(http://example.com/t.png)", ""),
        ("var(--x, url(http://example.com/t.png))", ""),
        (["#fff"], ""),
    ],
)
async def test_a_peers_color_is_shown_only_if_it_is_a_color(
    color: Any, shown: str, frontends: list[Frontend]
) -> None:
    async with room_pair("memory") as (alice, bob):
        widget = RoomWidget(alice)
        bob.awareness.set_local_state({"user": {"name": "bob", "color": color}})
        await until(lambda: widget.peers != [])
        assert widget.peers[0]["color"] == shown
        widget.close()


async def test_presence_follows_the_connection(frontends: list[Frontend]) -> None:
    # Disconnected, the widget cannot know who leaves meanwhile: it shows nobody, then
    # whoever is there when it is back.
    async with bind("websocket") as server, anyio.create_task_group() as tg:
        proxy = Proxy(server.port)  # type: ignore[attr-defined]
        await tg.start(proxy.serve)
        async with (
            connect("websocket", id="room", port=server.port) as bob,  # type: ignore[attr-defined]
            connect("websocket", id="room", port=proxy.port, max_backoff=0.1) as alice,
        ):
            bob.awareness.set_local_state({"user": {"name": "bob"}})
            widget = RoomWidget(alice)
            await until(lambda: [p["name"] for p in widget.peers] == ["bob"])
            proxy.held = True
            proxy.cut()
            await until(lambda: widget.status == "disconnected")
            assert widget.peers == []
            proxy.held = False
            await until(lambda: widget.status == "synchronized")
            await until(lambda: [p["name"] for p in widget.peers] == ["bob"])
            widget.close()
        tg.cancel_scope.cancel()


async def test_closing_the_widget_stops_the_relay(frontends: list[Frontend]) -> None:
    async with room_pair("memory") as (alice, _bob):
        widget = RoomWidget(alice)
        (frontend,) = frontends
        frontend.sync()
        widget.close()
        count = len(frontend.received)
        alice.doc.get("source", type=Text).insert(0, "after closing")
        assert len(frontend.received) == count


async def test_a_malformed_message_is_refused_and_the_relay_goes_on(
    frontends: list[Frontend], caplog: pytest.LogCaptureFixture
) -> None:
    async with room_pair("memory") as (alice, bob):
        RoomWidget(alice)
        (frontend,) = frontends
        frontend.sync()
        with caplog.at_level(logging.WARNING, logger="jupyter_rooms.widget"):
            frontend.send({"type": "update"}, [b"\xff\xff\xff"])
        assert "invalid message" in caplog.text
        frontend.doc.get("source", type=Text).insert(0, "still relaying")
        bob_source = bob.doc.get("source", type=Text)
        await until(lambda: str(bob_source) == "still relaying")


@pytest.mark.parametrize("wire", ["memory", "websocket", "file"])
async def test_a_closed_clients_widget_says_so_and_applies_no_edit(
    wire: str, frontends: list[Frontend], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if wire == "file":
        client = connect("file", path=tmp_path / "notes.ylog")
        async with client:
            widget = RoomWidget(client)
            (frontend,) = frontends
            frontend.sync()
            assert widget.status == "synchronized"
            frontend.doc.get("source", type=Text).insert(0, "logged")
            assert str(client.doc.get("source", type=Text)) == "logged"
    else:
        async with room_pair(wire) as (client, _bob):
            widget = RoomWidget(client)
            (frontend,) = frontends
            frontend.sync()
            assert widget.status == "synchronized"
    # The block ended: the client no longer reaches its room, and the widget says so
    # (the page turns read-only on it); an edit sent before the page heard is dropped
    # with a warning rather than kept where no one sees it.
    assert widget.status == "closed"
    with caplog.at_level(logging.WARNING, logger="jupyter_rooms.widget"):
        frontend.doc.get("source", type=Text).insert(0, "too late ")
    assert "after its client closed" in caplog.text
    assert "too late" not in str(client.doc.get("source", type=Text))
    # A widget made for the closed client starts out closed.
    assert RoomWidget(client).status == "closed"
    if wire == "file":
        async with connect("file", path=tmp_path / "notes.ylog") as again:
            assert str(again.doc.get("source", type=Text)) == "logged"
    widget.close()


async def test_a_clients_status_callbacks_follow_it_in_and_out(tmp_path: Path) -> None:
    seen: list[str] = []
    client = connect("file", path=tmp_path / "notes.ylog")
    client.on_status(lambda status, details: seen.append(status))
    for _ in range(2):
        async with client:
            assert not client.closed
        assert client.closed
    assert seen == ["synchronized", "closed", "synchronized", "closed"]


async def test_one_widget_per_client(frontends: list[Frontend]) -> None:
    async with room_pair("memory") as (alice, _bob):
        widget = widget_for(alice)
        assert widget_for(alice) is widget
        assert widget.client is alice
        assert widget.room == "room"
        widget.close()
        assert widget_for(alice) is not widget


async def test_a_client_outside_a_kernel_shows_as_its_repr(frontends: list[Frontend]) -> None:
    async with room_pair("memory") as (alice, _bob):
        assert alice._repr_mimebundle_() is None
    assert frontends == []


def test_importing_and_connecting_leave_ipywidgets_unimported() -> None:
    code = textwrap.dedent(
        """
        import sys
        import anyio
        from jupyter_rooms import bind, connect

        async def main():
            async with bind("memory") as server:
                async with connect("memory", id="r", server=server) as client:
                    client.doc
        anyio.run(main)
        assert "ipywidgets" not in sys.modules and "anywidget" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_the_widget_follows_a_room_whose_history_starts_anew(
    tmp_path: Path, frontends: list[Frontend], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("first")
    port = free_port()
    options: dict[str, Any] = {"root_dir": root, "port": port, "token": "t"}
    first = bind("jupyter", **options)
    await first.__aenter__()
    url = f"http://127.0.0.1:{port}/"
    async with connect("jupyter", id="a.txt", url=url, token="t", max_backoff=0.2) as client:
        RoomWidget(client)
        frontend = frontends[0]
        frontend.sync()
        await until(lambda: str(frontend.doc.get("source", type=Text)) == "first")
        await first.__aexit__(None, None, None)
        await until(lambda: not client.connected)  # type: ignore[attr-defined]
        # The history is gone and the file came from elsewhere: a new epoch.
        for log in (tmp_path / "data").rglob("*.ylog"):
            log.unlink()
        (root / "a.txt").write_text("second")
        async with bind("jupyter", **options):
            await until(lambda: str(frontend.doc.get("source", type=Text)) == "second", 15)
            assert [content["type"] for content, _ in frontend.received].count("reset") == 1
            # The view edits the new document, and the edit reaches the room.
            frontend.doc.get("source", type=Text).insert(0, ">")
            await until(lambda: str(client.doc.get("source", type=Text)) == ">second")
