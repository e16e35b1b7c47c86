"""The example notebooks run against a real server and do what they say."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from pycrdt import Array, Text

from jupyter_rooms.jupyter.kernelenv import ENV_ROOT, ENV_TOKEN, ENV_URL
from jupyter_rooms.notebook import Notebook

from helpers import wait_until
from jupyter_process import ServerProcess

pytestmark = pytest.mark.anyio

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture
async def lab(make_server: Callable[..., ServerProcess]) -> AsyncIterator[ServerProcess]:
    server = make_server("--RoomsApp.save_delay=0.2", "--RoomsApp.poll_interval=0.2")
    await server.start()
    for notebook in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(notebook, server.root / notebook.name)
    # The notebooks' kernels get what the server gives the kernels it starts.
    token = server.kernel_credential()
    os.environ.update({ENV_URL: server.url, ENV_TOKEN: token, ENV_ROOT: str(server.root)})
    yield server


async def execute(server: ServerProcess, name: str) -> list[str]:
    """Run a notebook as its own kernel would, and return what each code cell printed."""
    os.environ["JPY_SESSION_NAME"] = str(server.root / name)
    notebook = nbformat.read(server.root / name, as_version=4)
    client = NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": server.root}}
    )
    await client.async_execute()
    printed = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            printed.append("".join(o.get("text", "") for o in cell.outputs if o.get("name")))
    return printed


async def test_live_text(lab: ServerProcess) -> None:
    async with lab.join("hello.txt") as watcher:
        await execute(lab, "01-live-text.ipynb")
        assert str(watcher.doc.get("source", type=Text)) == "# Notes\nHello from a kernel!\n"
    assert (lab.root / "hello.txt").read_text() == "# Notes\nHello from a kernel!\n"


async def test_two_notebooks_share_a_todo_list(lab: ServerProcess) -> None:
    await execute(lab, "todo-alice.ipynb")
    printed = await execute(lab, "todo-bob.ipynb")
    assert "[ ] buy milk - alice" in printed[0]
    assert "[ ] call the plumber - bob" in printed[0]
    async with lab.join("todo.yroom") as client:
        items: list[dict[str, Any]] = client.doc.get("items", type=Array).to_py() or []
    assert [(i["task"], i["by"], i["done"]) for i in items] == [
        ("buy milk", "alice", True),
        ("write the report", "alice", True),
        ("call the plumber", "bob", False),
    ]


async def test_writing_into_an_open_notebook(lab: ServerProcess) -> None:
    nbformat.write(nbformat.v4.new_notebook(), lab.root / "scratch.ipynb")
    async with lab.join("scratch.ipynb") as tab:
        await execute(lab, "02-write-into-a-notebook.ipynb")
        seen = Notebook(tab.doc)
        await wait_until(lambda: len(seen) == 2)
        assert [cell.source for cell in seen] == [
            "# Written by a kernel",
            "total = sum(range(100))\nprint(total)",
        ]
    await wait_until(lambda: len(nbformat.read(lab.root / "scratch.ipynb", 4).cells) == 2)
    saved = nbformat.read(lab.root / "scratch.ipynb", as_version=4)
    nbformat.validate(saved)
    assert saved.cells[1].source == "total = sum(range(100))\nprint(total)"


async def test_presence(lab: ServerProcess) -> None:
    async with lab.join("hello.txt") as other:
        other.awareness.set_local_state({"user": {"name": "a person"}})
        printed = await execute(lab, "03-presence.ipynb")
    assert "1 others here: [{'user': {'name': 'a person'}}]" in printed[1]
