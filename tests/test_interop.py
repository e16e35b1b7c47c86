"""Interoperability with Yjs itself, run by node: Yjs's ``WebsocketProvider`` in our rooms,
and our clients on Yjs's reference server (``@y/websocket-server``)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from pycrdt import Map, Text

from jupyter_rooms import connect

from helpers import content, edit_randomly, roots, serving, settle

pytestmark = pytest.mark.anyio

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="session")
def node() -> str:
    """The node executable, with the npm packages of ``tests/node`` installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node and npm are needed to run Yjs's own client and server"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message)
        pytest.skip(message)
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            check=True,
            timeout=300,
        )
    return node


@asynccontextmanager
async def node_script(node: str, script: str, *args: str) -> AsyncIterator[Process]:
    process = await anyio.open_process([node, script, *args], cwd=NODE_DIR, stderr=None)
    try:
        yield process
    finally:
        with anyio.CancelScope(shield=True):
            process.terminate()
            with anyio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()


async def read_json_line(process: Process, timeout: float = 30) -> Any:  # noqa: ASYNC109
    """The first line the script prints, as JSON."""
    assert process.stdout is not None
    buffer = b""
    with anyio.fail_after(timeout):
        while b"\n" not in buffer:
            try:
                buffer += await process.stdout.receive()
            except anyio.EndOfStream:
                raise AssertionError(
                    f"node exited ({await process.wait()}) before printing; got {buffer!r}"
                ) from None
    return json.loads(buffer.split(b"\n", 1)[0])


async def edit_text(text: Text, seed: int, edits: int) -> None:
    rng = random.Random(seed)
    for i in range(edits):
        length = len(text)
        if length and rng.random() < 0.25:
            start = rng.randrange(length)
            del text[start : min(length, start + rng.randint(1, 3))]
        else:
            text.insert(rng.randint(0, length), f"<p{i}>")
        # Paced, so that the other side's edits land in between.
        await anyio.sleep(0.001)


async def test_yjs_provider_joins_our_server(node: str) -> None:
    async with (
        serving("websocket") as (server, options),
        connect("websocket", id="interop", **options) as client,
    ):
        client.awareness.set_local_state({"user": "python"})
        text = client.doc.get("text", type=Text)
        done = client.doc.get("done", type=Map)
        url = f"ws://127.0.0.1:{options['port']}"
        async with node_script(node, "yjs-client.mjs", url, "interop", "40", "11") as process:
            await settle(
                lambda: any(s.get("user") == "yjs" for s in client.awareness.states.values()),
                timeout=20,
            )
            assert {"user": "yjs"} in client.awareness.states.values()
            await edit_text(text, 3, 40)
            done["python"] = True
            seen_by_yjs = await read_json_line(process)
            await settle(lambda: done.get("yjs") is True and str(text) == seen_by_yjs["text"])
            room = server.room_manager.rooms["interop"]
            assert str(text) == seen_by_yjs["text"] == str(room.doc.get("text", type=Text))
            assert "<y" in str(text) and "<p" in str(text)
            assert seen_by_yjs["users"] == ["python", "yjs"]

        # Yjs's client leaving takes its presence with it.
        await settle(lambda: all(s.get("user") != "yjs" for s in client.awareness.states.values()))
        assert [s.get("user") for s in client.awareness.states.values()] == ["python"]


async def test_our_clients_join_the_reference_server(node: str) -> None:
    async with node_script(node, "y-websocket-server.mjs") as process:
        port = (await read_json_line(process))["port"]
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(connect("websocket", id="interop", port=port))
                for _ in range(3)
            ]
            async with anyio.create_task_group() as tg:
                for i, client in enumerate(clients):
                    tg.start_soon(edit_randomly, client.doc, 40 + i, 60, f"done-{i}")
            markers = {f"done-{i}" for i in range(len(clients))}
            await settle(
                lambda: (
                    all(markers <= set(roots(c.doc)[1].keys()) for c in clients)
                    and all(content(c.doc) == content(clients[0].doc) for c in clients)
                )
            )
            expected = content(clients[0].doc)
            assert markers <= set(expected["map"])
            for client in clients:
                assert content(client.doc) == expected

            first, others = clients[0], clients[1:]
            first.awareness.set_local_state({"user": "first"})
            first_id = first.awareness.client_id
            await settle(lambda: all(first_id in c.awareness.states for c in others))
            for client in others:
                assert client.awareness.states[first_id] == {"user": "first"}

        # A newcomer gets the document from the reference server's copy.
        async with connect("websocket", id="interop", port=port) as newcomer:
            await settle(lambda: content(newcomer.doc) == expected)
            assert content(newcomer.doc) == expected


async def test_presence_leaves_the_reference_server_with_our_client(node: str) -> None:
    async with node_script(node, "y-websocket-server.mjs") as process:
        port = (await read_json_line(process))["port"]
        async with connect("websocket", id="p", port=port) as watcher:
            async with connect("websocket", id="p", port=port) as leaving:
                leaving.awareness.set_local_state({"user": "leaving"})
                leaving_id = leaving.awareness.client_id
                await settle(lambda: leaving_id in watcher.awareness.states)
                assert watcher.awareness.states[leaving_id] == {"user": "leaving"}
            await settle(lambda: leaving_id not in watcher.awareness.states)
            assert leaving_id not in watcher.awareness.states
