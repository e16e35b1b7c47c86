"""The servers the benchmark compares, each run in a process of its own.

A target knows how to install itself (into the benchmark's cache directory, never into
the project's environment), start a server on 127.0.0.1 on a free port with a temporary
root directory, and give the websocket URL of a room. Adding a server to the benchmark
is adding a class here and a line in ``TARGETS``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from localjupyter import free_port, jupyter_command
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"

# Extensions that a plain ``pip install jupyter-collaboration`` enables besides the one
# under test; they are switched off so that every Jupyter target serves rooms and little
# else, and memory figures compare the rooms, not the rest of JupyterLab.
UNRELATED_EXTENSIONS = ("jupyterlab", "jupyter_lsp", "jupyter_server_terminals", "notebook_shim")


class Unavailable(Exception):
    """A target cannot run here; the message says why and how to make it run."""


class Server:
    """A running server: its process and how to reach its rooms.

    Args:
        process: The server's process.
        port: The port it listens on.
    """

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port

    @property
    def pid(self) -> int:
        """The process whose memory is measured."""
        return self.process.pid

    async def room_url(self, path: str, kind: str) -> tuple[str, dict[str, str]]:
        """The websocket URL (and headers) of the room for a file.

        Args:
            path: The file's path relative to the root (file-backed servers load it).
            kind: ``"text"`` (a ``Text`` named ``source``) or ``"notebook"``.

        Returns:
            The URL and the HTTP headers to connect with.
        """
        return f"ws://{HOST}:{self.port}/{quote(path)}", {}


class Target:
    """A server to benchmark.

    Attributes:
        name: The name used on the command line and in results.
        file_backed: Whether the server loads rooms from files in its root directory
            (otherwise a room starts empty and the benchmark's clients fill it).
        scenarios: The scenarios that apply to it.
    """

    name = ""
    file_backed = False
    scenarios: tuple[str, ...] = ("latency", "burst", "open", "rooms")

    def setup(self, cache: Path) -> str:
        """Install what the target needs, once, under the cache directory.

        Args:
            cache: The benchmark's cache directory.

        Returns:
            The version of the server, for the results.

        Raises:
            Unavailable: It cannot be installed here.
        """
        raise NotImplementedError

    def command(self, port: int, root: Path) -> tuple[list[str], dict[str, str]]:
        """The command line and extra environment that start the server."""
        raise NotImplementedError

    def make_server(self, process: subprocess.Popen[bytes], port: int) -> Server:
        return Server(process, port)

    async def wait_ready(self, server: Server) -> None:
        """Return once the server accepts connections."""
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {server.process.returncode}")
            try:
                _, writer = await asyncio.open_connection(HOST, server.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return

    @asynccontextmanager
    async def serve(self, root: Path, *, timeout: float = 120) -> AsyncIterator[Server]:
        """Run the server, with ``root`` as its root and working directory.

        Args:
            root: A fresh directory for the server's files; its log goes beside it.
            timeout: Seconds to wait for the server to accept connections.

        Yields:
            The running server; it is stopped when the block ends.
        """
        server = self._start(root)
        try:
            await asyncio.wait_for(self.wait_ready(server), timeout)
            yield server
        finally:
            self._stop(server)

    def _start(self, root: Path) -> Server:
        port = free_port()
        args, env = self.command(port, root)
        with (root.parent / f"{root.name}.log").open("wb") as log:
            process = subprocess.Popen(
                args,
                cwd=root,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.make_server(process, port)

    def _stop(self, server: Server, grace: float = 10) -> None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(grace)
        except subprocess.TimeoutExpired:
            print(
                f"[{self.name}] still running {grace:.0f} s after SIGTERM: killed",
                file=sys.stderr,
                flush=True,
            )
            server.process.kill()
            server.process.wait()


class RoomsWebsocket(Target):
    """jupyter_rooms' standalone websocket server, from the project's own environment."""

    name = "jupyter_rooms"

    def setup(self, cache: Path) -> str:
        from jupyter_rooms import __version__

        return __version__

    def command(self, port: int, root: Path) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, str(HERE / "serve_rooms.py"), str(port)], {}


class YjsWebsocket(Target):
    """The Yjs reference server, ``@y/websocket-server``, run by node (in memory, no files)."""

    name = "yjs"
    package = "@y/websocket-server"
    version = "0.1.1"

    def setup(self, cache: Path) -> str:
        self.prefix = cache / "yjs-server"
        self.script = self.prefix / "node_modules" / self.package / "src" / "server.js"
        if not self.script.exists():
            npm = shutil.which("npm")
            if npm is None or shutil.which("node") is None:
                raise Unavailable("node and npm are needed: install Node.js 18 or newer")
            self.prefix.mkdir(parents=True, exist_ok=True)
            spec = f"{self.package}@{self.version}"
            result = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--prefix", str(self.prefix), spec],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if result.returncode != 0 or not self.script.exists():
                raise Unavailable(f"npm install {self.package} failed: {result.stderr[-500:]}")
        return self.version

    def command(self, port: int, root: Path) -> tuple[list[str], dict[str, str]]:
        return ["node", str(self.script)], {"HOST": HOST, "PORT": str(port)}


class JupyterServer(Server):
    """A Jupyter server, reached with a token."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, token: str) -> None:
        super().__init__(process, port)
        self.token = token
        self.base = f"http://{HOST}:{port}/"

    async def request(self, method: str, path: str, body: dict[str, str] | None = None) -> bytes:
        response = await AsyncHTTPClient().fetch(
            self.base + path,
            method=method,
            headers={"Authorization": f"token {self.token}"},
            body=None if body is None else json.dumps(body),
            request_timeout=60,
        )
        content: bytes = response.body
        return content


class JupyterTarget(Target):
    """A Jupyter server (with extensions) in a Python environment of its own."""

    file_backed = True
    python = sys.executable
    extension = ""

    def command(self, port: int, root: Path) -> tuple[list[str], dict[str, str]]:
        config = root.parent / f"{root.name}-jupyter"
        for sub in ("config", "data", "runtime"):
            (config / sub).mkdir(parents=True, exist_ok=True)
        extensions = {**dict.fromkeys(UNRELATED_EXTENSIONS, False), self.extension: True}
        (config / "config" / "jupyter_server_config.json").write_text(
            json.dumps({"ServerApp": {"jpserver_extensions": extensions}})
        )
        self.token = secrets.token_hex(16)
        args = jupyter_command("server", root, port, self.token, python=self.python)
        env = {
            "JUPYTER_CONFIG_DIR": str(config / "config"),
            "JUPYTER_DATA_DIR": str(config / "data"),
            "JUPYTER_RUNTIME_DIR": str(config / "runtime"),
        }
        return args, env

    def make_server(self, process: subprocess.Popen[bytes], port: int) -> Server:
        return self.server_class(process, port, self.token)

    server_class: type[JupyterServer] = JupyterServer

    async def wait_ready(self, server: Server) -> None:
        assert isinstance(server, JupyterServer)
        await super().wait_ready(server)
        while True:
            try:
                await server.request("GET", "api/status")
                return
            except (OSError, HTTPClientError):
                await asyncio.sleep(0.2)


class CollaborationServer(JupyterServer):
    """jupyter-collaboration's rooms: a session first, then the room of the file's id."""

    async def room_url(self, path: str, kind: str) -> tuple[str, dict[str, str]]:
        file_format, file_type = ("json", "notebook") if kind == "notebook" else ("text", "file")
        body = {"format": file_format, "type": file_type}
        session = json.loads(await self.request("PUT", f"api/collaboration/session/{path}", body))
        room = f"{file_format}:{file_type}:{session['fileId']}"
        query = f"sessionId={session['sessionId']}&token={self.token}"
        return f"ws://{HOST}:{self.port}/api/collaboration/room/{room}?{query}", {}


class JupyterCollaboration(JupyterTarget):
    """jupyter-collaboration (``jupyter_server_ydoc``), installed in a venv in the cache."""

    name = "jupyter-collaboration"
    extension = "jupyter_server_ydoc"
    server_class = CollaborationServer
    requirements = ("jupyter-collaboration", "jupyter_server")

    def setup(self, cache: Path) -> str:
        venv = cache / "venv-peer"
        self.python = str(venv / "bin" / "python")
        marker = venv / "installed"
        if not marker.exists():
            steps = [
                [sys.executable, "-m", "venv", "--clear", str(venv)],
                [self.python, "-m", "pip", "install", "-q", *self.requirements],
            ]
            for step in steps:
                result = subprocess.run(step, capture_output=True, text=True, timeout=900)
                if result.returncode != 0:
                    raise Unavailable(f"installing {self.name} failed: {result.stderr[-500:]}")
            marker.touch()
        result = subprocess.run(
            [self.python, "-c", "import jupyter_server_ydoc as m; print(m.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise Unavailable(f"{self.name} does not import: {result.stderr[-500:]}")
        return f"jupyter_server_ydoc {result.stdout.strip()}"


class RoomsJupyterServer(JupyterServer):
    """jupyter_rooms' extension: the room of a file is at ``api/rooms/{path}``."""

    async def room_url(self, path: str, kind: str) -> tuple[str, dict[str, str]]:
        query = f"token={self.token}"
        return f"ws://{HOST}:{self.port}/api/rooms/{quote(path)}?{query}", {}


class RoomsJupyter(JupyterTarget):
    """jupyter_rooms' Jupyter server extension, from the project's own environment."""

    name = "jupyter_rooms-jupyter"
    extension = "jupyter_rooms"
    server_class = RoomsJupyterServer

    def setup(self, cache: Path) -> str:
        try:
            from jupyter_rooms.jupyter import extension  # noqa: F401
        except ImportError as exc:
            raise Unavailable(f"this jupyter_rooms has no Jupyter extension ({exc})") from None
        from jupyter_rooms import __version__

        return __version__


class Floor(Target):
    """No server: the burst applied with pycrdt alone, in this process."""

    name = "pycrdt"
    scenarios = ("burst",)

    def setup(self, cache: Path) -> str:
        from pycrdt import __version__

        return f"pycrdt {__version__}"


# In the order of the table's columns; the first is what the others are compared to.
TARGETS: dict[str, type[Target]] = {
    target.name: target
    for target in (JupyterCollaboration, RoomsJupyter, RoomsWebsocket, YjsWebsocket, Floor)
}
BASELINE = JupyterCollaboration.name
