"""Rooms in a real ``jupyter server`` process: enabled on install, restarts, SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest
from pycrdt import Text
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from jupyter_rooms import connect
from jupyter_rooms.notebook import Notebook

pytestmark = pytest.mark.anyio

TOKEN = "secret-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Jupyter's directories in the test's directory; the installed config still applies."""
    env = dict(os.environ)
    for name in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR"):
        env[name] = str(tmp_path / name.lower())
    return env


class ServerProcess:
    """A ``jupyter server`` started with no flag about the extension."""

    def __init__(self, root: Path, env: dict[str, str], port: int, *options: str) -> None:
        self.root = root
        self.env = env
        self.port = port
        self.options = options
        self.url = f"http://127.0.0.1:{port}/"
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={TOKEN}",
            *self.options,
        ]
        with open(self.root.parent / f"server-{self.port}.log", "ab") as log:
            return subprocess.Popen(command, env=self.env, stdout=log, stderr=log)

    async def start(self) -> None:
        self.process = self._spawn()
        headers = {"Authorization": f"token {TOKEN}"}
        with anyio.fail_after(60):
            while True:
                assert self.process.poll() is None, "the server exited"
                try:
                    await AsyncHTTPClient().fetch(self.url + "api/rooms", headers=headers)
                    return
                except (OSError, HTTPClientError):
                    await anyio.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def join(self, path: str, **options: Any) -> Any:
        return connect("jupyter", id=path, url=self.url, token=TOKEN, **options)


@pytest.fixture
def make_server(tmp_path: Path, env: dict[str, str]) -> Iterator[Callable[..., ServerProcess]]:
    root = tmp_path / "root"
    root.mkdir()
    servers: list[ServerProcess] = []

    def make(*options: str, port: int | None = None) -> ServerProcess:
        server = ServerProcess(root, env, port or free_port(), *options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop(signal.SIGKILL)


async def until(predicate: Callable[[], bool], seconds: float = 15.0) -> None:
    with anyio.fail_after(seconds):
        while not predicate():
            await anyio.sleep(0.02)


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
        await until(lambda: sources(path) == ["x = 2", "print(x)"])
        server.stop()
        await until(lambda: not client.connected)
        # Offline, the client edits; meanwhile another program edits the file.
        notebook.append_cell("# written offline", cell_type="markdown")
        nb = nbformat.read(path, as_version=4)
        nb.cells[1].source = "print(x * 10)"
        nbformat.write(nb, path)
        await server.start()
        expected = ["x = 2", "print(x * 10)", "# written offline"]
        await until(
            lambda: client.synchronized.is_set() and [c.source for c in notebook] == expected
        )
        await until(lambda: sources(path) == expected)
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
        await until(lambda: str(seen) == expected)
        server.stop(signal.SIGKILL)
    assert path.read_text() == "start\n"
    restarted = make_server("--RoomsApp.save_delay=0.1", port=server.port)
    await restarted.start()
    async with restarted.join("notes.txt") as reader:
        assert str(reader.doc.get("source", type=Text)) == expected
    await until(lambda: path.read_text() == expected)
    restarted.stop()
