"""jupyter_rooms beside the full jupyter-collaboration (its server part, jupyter_server_ydoc,
enabled too): never two live rooms for one file.

The test runs servers of a virtual environment that has both installed (jupyter_rooms
from this checkout, editable, so it is made once and reused: under
``$JUPYTER_ROOMS_TEST_CACHE``, by default ``~/.cache/jupyter_rooms-tests``). Making it
downloads jupyter-collaboration from PyPI (about 20 s); set
``JUPYTER_ROOMS_SKIP_COLLABORATION_INSTALL=1`` to skip the test where PyPI is out of reach.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pycrdt import Text

from collaboration_peer import Peer, request, room_socket, session
from helpers import wait_until
from jupyter_process import ServerProcess

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def python_with_both() -> str:
    """The interpreter of a virtual environment with jupyter_rooms and jupyter-collaboration."""
    if os.environ.get("JUPYTER_ROOMS_SKIP_COLLABORATION_INSTALL"):
        pytest.skip("JUPYTER_ROOMS_SKIP_COLLABORATION_INSTALL is set")
    cache = Path(
        os.environ.get("JUPYTER_ROOMS_TEST_CACHE") or Path.home() / ".cache" / "jupyter_rooms-tests"
    )
    key = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    venv = cache / f"with-jupyter-collaboration-{key}"
    python = venv / "bin" / "python"
    ready = venv / "ready"
    if not ready.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", str(ROOT), "jupyter-collaboration"],
            check=True,
        )
        ready.write_text("jupyter_rooms (editable) and jupyter-collaboration\n")
    return str(python)


async def test_jupyter_rooms_takes_the_collaboration_endpoints_over(
    make_server: Callable[..., ServerProcess], python_with_both: str
) -> None:
    server = make_server("--RoomsApp.save_delay=0.2", python=python_with_both)
    (server.root / "notes.txt").write_text("one room\n")
    await server.start()
    log = (server.root.parent / f"server-{server.port}.log").read_text()
    assert "jupyter_server_ydoc | extension was successfully loaded" in log
    assert "jupyter_server_ydoc is enabled too; jupyter_rooms serves api/collaboration" in log

    # The page's session and socket lead to the room kernels join at api/rooms.
    answer = await session(server, "notes.txt", "text", "file")
    channel = await room_socket(
        server, f"text:file:{answer['fileId']}", session_id=answer["sessionId"]
    )
    page = Peer(channel)
    await page.sync()
    async with server.join("notes.txt") as kernel:
        rooms = (await request(server, "GET", "api/rooms"))[1]["rooms"]
        assert [(r["id"], r["clients"], r["epoch"]) for r in rooms] == [
            ("notes.txt", 2, answer["sessionId"])
        ]
        kernel.doc.get("source", type=Text).insert(0, "kernel: ")
        await page.pump(lambda: str(page.doc.get("source", type=Text)) == "kernel: one room\n")
        reply = await page.save(1)
        assert reply["status"] == "success"
        assert (server.root / "notes.txt").read_text() == "kernel: one room\n"
    # jupyter_server_ydoc opened nothing: no store of its own, no room of its own.
    assert not (server.root / ".jupyter_ystore.db").exists()


async def test_the_switch_leaves_them_to_jupyter_server_ydoc(
    make_server: Callable[..., ServerProcess], python_with_both: str
) -> None:
    server = make_server("--RoomsApp.collaboration=False", python=python_with_both)
    (server.root / "notes.txt").write_text("two rooms\n")
    await server.start()
    await wait_until(
        lambda: (
            "api/collaboration is left to jupyter_server_ydoc"
            in (server.root.parent / f"server-{server.port}.log").read_text()
        ),
        within=10,
    )
    answer = await session(server, "notes.txt", "text", "file")
    # jupyter_server_ydoc's answer: its own server session, not a room's epoch of ours.
    rooms = (await request(server, "GET", "api/rooms"))[1]["rooms"]
    assert rooms == []
    assert answer["fileId"]
