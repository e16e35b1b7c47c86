"""Rooms in a real ``jupyter server`` process: enabled on install, restarts, SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from pycrdt import Text

from jupyter_rooms.notebook import Notebook

from helpers import wait_until
from jupyter_process import ServerProcess

pytestmark = pytest.mark.anyio


def sources(path: Path) -> list[str] | None:
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except (FileNotFoundError, ValueError, nbformat.ValidationError):
        return None
    return [cell.source for cell in nb.cells]


def test_the_extension_is_enabled_on_install(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jupyter_server.extension.serverextension", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if "jupyter_rooms" in line]
    assert any("enabled" in line for line in lines), output
    assert any("OK" in line for line in lines), output


async def test_a_bad_option_is_logged_and_never_used(
    make_server: Callable[..., ServerProcess],
) -> None:
    # A largest message of 0 bytes would close every client; the server says why it uses
    # the defaults instead.
    server = make_server("--RoomsApp.max_message_size=0")
    (server.root / "notes.txt").write_text("kept\n")
    await server.start()
    async with server.join("notes.txt", reconnect=False) as client:
        text = client.doc.get("source", type=Text)
        assert str(text) == "kept\n"
        text.insert(0, "still served: ")
        await wait_until(lambda: (server.root / "notes.txt").read_text() == str(text))
    assert "RoomsApp.max_message_size must be 1 bytes or more, not 0" in server.log_text()
    server.stop()


async def test_a_client_reconnects_after_a_restart_without_duplicates(
    make_server: Callable[..., ServerProcess],
) -> None:
    fast = ("--RoomsApp.save_delay=0.1", "--RoomsApp.poll_interval=0.1")
    server = make_server(*fast)
    path = server.root / "analysis.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("print(x)")]
    nbformat.write(nb, path)
    await server.start()
    client = server.join("analysis.ipynb", max_backoff=0.2)
    resets: list[str] = []
    client.on_status(lambda status, details: resets.append(status) if status == "reset" else None)
    async with client:
        epoch = client.epoch
        notebook = Notebook(client.doc)
        notebook[0].source = "x = 2"
        await wait_until(lambda: sources(path) == ["x = 2", "print(x)"])
        server.stop()
        await wait_until(lambda: not client.connected)
        # Offline, the client edits; meanwhile another program edits the file.
        notebook.append_cell("# written offline", cell_type="markdown")
        nb = nbformat.read(path, as_version=4)
        nb.cells[1].source = "print(x * 10)"
        nbformat.write(nb, path)
        await server.start()
        expected = ["x = 2", "print(x * 10)", "# written offline"]
        await wait_until(
            lambda: client.synchronized.is_set() and [c.source for c in notebook] == expected
        )
        await wait_until(lambda: sources(path) == expected)
        assert client.epoch == epoch and not resets
        async with server.join("analysis.ipynb") as other:
            assert [c.source for c in Notebook(other.doc)] == expected
    server.stop()


async def test_nothing_the_server_received_is_lost_to_sigkill(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server("--RoomsApp.save_delay=600", "--RoomsApp.poll_interval=0.1")
    path = server.root / "notes.txt"
    path.write_text("start\n")
    await server.start()
    async with (
        server.join("notes.txt", reconnect=False) as writer,
        server.join("notes.txt", reconnect=False) as witness,
    ):
        text = writer.doc.get("source", type=Text)
        for i in range(200):
            text.insert(len(str(text)), f"line {i}\n")
        expected = str(text)
        seen = witness.doc.get("source", type=Text)
        # The witness has it all: the server received it all (and logged it first).
        await wait_until(lambda: str(seen) == expected)
        server.stop(signal.SIGKILL)
    assert path.read_text() == "start\n"
    restarted = make_server("--RoomsApp.save_delay=0.1", port=server.port)
    await restarted.start()
    async with restarted.join("notes.txt") as reader:
        assert str(reader.doc.get("source", type=Text)) == expected
    await wait_until(lambda: path.read_text() == expected)
    restarted.stop()
