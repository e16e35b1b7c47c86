"""A randomized fault run: clients edit a notebook room, a text room and a free-form room
while connections drop and stall, the server restarts or is killed, and (on the jupyter
wire) other programs change the rooms' files. Seeded, bounded in time, and it says what
it did.

Three wires, one harness: ``websocket`` (``python -m jupyter_rooms --store DIR``),
``jupyter`` (a ``jupyter server`` process with the extension) and ``redis`` (two such
servers on one root, sharing their rooms through a ``redis-server`` of the run's own,
which is also restarted now and then; writers take the servers in turn). Short runs are
part of the test suite (tests/test_fault_run.py); a longer one is::

    python tests/faults.py --wire jupyter --seconds 300 --seed 7

What it checks:

- after every restart and every SIGKILL, each room holds everything an observer client
  had seen from the server just before (read by a fresh client before anyone else
  reconnects; on the ``redis`` wire, an observer of the other server, and what it had
  seen must reach the restarted server through Redis);
- at the end, every client, and the room's file (or log) on disk, hold the same content,
  with every edit (the clients' and the other programs') exactly once.

With ``--ballast MB``, the free-form room also holds a text of that size, put there
before the clients join and checked at the end like the rest, so that every sync reply
of that room (each reconnection) is a large message: over 2 MiB, a server writes it in
fragments, which the cuts, stalls, restarts and kills then meet half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import nbformat
from anyio.abc import SocketStream, TaskGroup
from pycrdt import Array, Doc, Map, Text
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from jupyter_rooms import ChannelClient, connect
from jupyter_rooms.logroom import log_path
from jupyter_rooms.notebook import Notebook
from jupyter_rooms.updatelog import UpdateLog

from helpers import free_port, jupyter_command
from redis_server import RedisServer

# Tokens end with this, so an insert never lands inside another token.
END = "|"
TOKEN = re.compile(r"[^|\s]+\|")
JUPYTER_TOKEN = "fault-run-token"
# The root of the free-form room that holds the ballast (``--ballast``).
BALLAST = "ballast"
# How long a server restarted beside others may take to get from Redis what the others
# had (``Run._restart``).
SHARED_CATCH_UP = 15.0


class Proxy:
    """A TCP relay between clients and the server, which can cut, stall or hold the link."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._links: set[TaskGroup] = set()
        self._resume = anyio.Event()
        self._resume.set()
        self.held = False

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        # Not anyio's TCP listener: it awaits asyncio's sock_accept, which Python 3.11
        # fails with InvalidStateError in the event loop when it is cancelled as a client
        # connects (python/cpython#153761), and the test with it. Waiting until the
        # socket is readable, then accepting, is cancelled cleanly.
        with socket.create_server(("127.0.0.1", self.port)) as listening:
            listening.setblocking(False)
            task_status.started()
            async with anyio.create_task_group() as links:
                while True:
                    await anyio.wait_readable(listening)
                    try:
                        connection, _ = listening.accept()
                    except BlockingIOError:
                        continue
                    links.start_soon(self._link, await SocketStream.from_socket(connection))

    async def _link(self, client: SocketStream) -> None:
        if self.held:
            await client.aclose()
            return
        try:
            server = await anyio.connect_tcp("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        async with client, server, anyio.create_task_group() as tg:
            self._links.add(tg)
            try:
                tg.start_soon(self._pipe, client, server, tg)
                tg.start_soon(self._pipe, server, client, tg)
                await anyio.sleep_forever()
            finally:
                self._links.discard(tg)

    async def _pipe(self, source: SocketStream, sink: SocketStream, tg: TaskGroup) -> None:
        try:
            async for chunk in source:
                await self._resume.wait()
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        tg.cancel_scope.cancel()

    def cut(self) -> None:
        """Drop every connection through the proxy at once."""
        for tg in list(self._links):
            tg.cancel_scope.cancel()

    async def stall(self, seconds: float) -> None:
        """Stop relaying for a while: to each side, the other is frozen."""
        resume = self._resume = anyio.Event()
        await anyio.sleep(seconds)
        # Set this stall's own event: a relay may wait on it though a later stall began.
        resume.set()


class ServerProcess(ABC):
    """A server in a process of its own, on a fixed port, keeping its state under ``store``."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.store.mkdir(exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def command(self) -> list[str]:
        """The command that runs the server."""

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    @abstractmethod
    async def ready(self) -> bool:
        """Whether the server accepts clients."""

    async def start(self) -> None:
        with open(self.store / "server.log", "ab") as output:
            # Popen returns at once; the wait for the server below is asynchronous.
            self.process = subprocess.Popen(  # noqa: ASYNC220
                self.command(), env=self.env(), stdout=output, stderr=output
            )
        with anyio.fail_after(60):
            while not await self.ready():
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode}")
                await anyio.sleep(0.05)

    def warnings(self, limit: int = 20) -> str:
        """What the server last logged about rooms, and its warnings, for a failure's message."""
        try:
            lines = (self.store / "server.log").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        picked = [
            line
            for line in lines
            if ("RoomsApp" in line or line.startswith(("[W ", "[E ", "WARNING", "ERROR")))
            and "websocket_ping_timeout" not in line
            and "] rooms: " not in line
        ]
        if not picked:
            return ""
        return "\nwhat the server logged last:\n" + "\n".join(picked[-limit:])

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        self.process.send_signal(sig)
        process = self.process
        self.process = None
        with anyio.fail_after(30):
            while process.poll() is None:
                await anyio.sleep(0.02)
        if sig == signal.SIGTERM and process.returncode != 0:
            raise RuntimeError(f"the server exited with {process.returncode} on SIGTERM")


class WebsocketProcess(ServerProcess):
    """``python -m jupyter_rooms`` keeping its rooms in update logs in ``store``."""

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "jupyter_rooms", "--port", str(self.port)]
        return [*command, "--store", str(self.store / "logs"), "--log-level", "WARNING"]

    async def ready(self) -> bool:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", self.port)
        except OSError:
            return False
        await stream.aclose()
        return True


class JupyterProcess(ServerProcess):
    """``jupyter server`` (the extension enabled by its installation) on ``store/root``,
    with Jupyter's own directories (the rooms' logs among them) under ``store``."""

    def __init__(self, store: Path, *options: str, root: Path | None = None) -> None:
        super().__init__(store)
        self.root = store / "root" if root is None else root
        self.root.mkdir(exist_ok=True)
        self.options = options

    def command(self) -> list[str]:
        return jupyter_command("server", self.root, self.port, JUPYTER_TOKEN, *self.options)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR"):
            env[name] = str(self.store / name.lower())
        return env

    async def ready(self) -> bool:
        try:
            await self.rooms()
        except (OSError, HTTPClientError):
            return False
        return True

    async def rooms(self) -> dict[str, dict[str, Any]]:
        """The open rooms as ``GET api/rooms`` lists them, by id."""
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{self.port}/api/rooms",
            headers={"Authorization": f"token {JUPYTER_TOKEN}"},
            request_timeout=5,
        )
        return {room["id"]: room for room in json.loads(response.body)["rooms"]}


def _identity(path: Path) -> tuple[int, int, int]:
    # The server saves by replacing the file: a new inode, whatever the clock's grain.
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def replace_file(path: Path, change: Callable[[bytes], bytes]) -> bool:
    """Change a file the way another program saving it would, and only if it did not
    change while the new content was made (so a save of the room's is never undone).

    Returns:
        Whether the file was changed: not if it stayed unreadable (a save being written
        in place, or one a crash cut short) for a second.
    """
    for _ in range(100):
        before = _identity(path)
        try:
            data = change(path.read_bytes())
        except ValueError:
            # Caught in the middle of a save: look again in a moment.
            time.sleep(0.01)
            continue
        temporary = path.with_name(f".{path.name}.outside")
        temporary.write_bytes(data)
        if _identity(path) == before:
            os.replace(temporary, path)
            return True
        temporary.unlink()
    return False


class RoomKind(ABC):
    """One room of the run: how clients edit it, and how its content is read back."""

    name: str
    file: str

    @abstractmethod
    def edit(self, doc: Doc, token: str, rng: random.Random, number: int) -> None:
        """Put ``token`` somewhere in the document (once)."""

    @abstractmethod
    def state(self, doc: Doc) -> Any:
        """The content a user would compare."""

    @abstractmethod
    def tokens(self, state: Any) -> list[str]:
        """The tokens in a content, as often as each occurs."""

    @abstractmethod
    def from_file(self, path: Path) -> Any:
        """The content of the room's file."""

    @abstractmethod
    def edit_file(self, path: Path, token: str) -> bool:
        """Put ``token`` in the room's file, as another program would; whether it could."""

    def check(self, state: Any) -> str | None:
        """What is wrong with a content besides its tokens, if anything."""
        return None


def _text_insert(text: Text, token: str, rng: random.Random) -> None:
    current = str(text)
    boundaries = [0] + [i + 1 for i, char in enumerate(current) if char == END]
    index = rng.choice(boundaries)
    text.insert(len(current[:index].encode()), token)


class TextRoom(RoomKind):
    name = "text"
    file = "notes.txt"

    def edit(self, doc: Doc, token: str, rng: random.Random, number: int) -> None:
        _text_insert(doc.get("source", type=Text), token, rng)

    def state(self, doc: Doc) -> str:
        return str(doc.get("source", type=Text))

    def tokens(self, state: str) -> list[str]:
        return TOKEN.findall(state)

    def from_file(self, path: Path) -> str:
        return path.read_text() if path.exists() else ""

    def edit_file(self, path: Path, token: str) -> bool:
        return replace_file(path, lambda data: data + f"{token}\n".encode())


class NotebookRoom(RoomKind):
    name = "notebook"
    file = "notebook.ipynb"

    def edit(self, doc: Doc, token: str, rng: random.Random, number: int) -> None:
        notebook = Notebook(doc)
        if len(notebook) == 0 or rng.random() < 0.3:
            notebook.insert_cell(rng.randint(0, len(notebook)), token)
        else:
            cell = notebook[rng.randrange(len(notebook))]
            size = len(cell.source)
            cell.edit(size, size, token)

    def state(self, doc: Doc) -> list[tuple[str, str]]:
        return [(cell.cell_type, cell.source) for cell in Notebook(doc)]

    def tokens(self, state: list[tuple[str, str]]) -> list[str]:
        return [token for _, source in state for token in TOKEN.findall(source)]

    def check(self, state: list[tuple[str, str]]) -> str | None:
        # Every cell starts with the token that made it: an empty cell came from nowhere.
        empty = sum(1 for _, source in state if not source)
        return f"{empty} empty cells" if empty else None

    def from_file(self, path: Path) -> list[tuple[str, str]]:
        if not path.exists():
            return []
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        return [(cell.cell_type, cell.source) for cell in notebook.cells]

    def edit_file(self, path: Path, token: str) -> bool:
        def add_cell(data: bytes) -> bytes:
            notebook = nbformat.reads(data.decode(), as_version=4)
            notebook.cells.append(nbformat.v4.new_markdown_cell(token))
            return nbformat.writes(notebook).encode()

        return replace_file(path, add_cell)


def _doc_of_log(path: Path) -> Doc:
    doc: Doc = Doc()
    if path.exists():
        for update in UpdateLog(path).load().updates:
            doc.apply_update(update)
    return doc


class FreeformRoom(RoomKind):
    name = "free-form"
    file = "state.yroom"
    # The digest of the ballast text the room should hold (none: the empty text's).
    ballast = hashlib.sha256(b"").hexdigest()

    def edit(self, doc: Doc, token: str, rng: random.Random, number: int) -> None:
        if rng.random() < 0.5:
            doc.get("map", type=Map)[token] = number
        else:
            array = doc.get("array", type=Array)
            array.insert(rng.randint(0, len(array)), token)

    def state(self, doc: Doc) -> tuple[dict[str, Any], list[Any], str]:
        # The ballast (``--ballast``) is compared by its digest: it is large.
        ballast = hashlib.sha256(str(doc.get(BALLAST, type=Text)).encode()).hexdigest()
        return (
            doc.get("map", type=Map).to_py() or {},
            doc.get("array", type=Array).to_py() or [],
            ballast,
        )

    def tokens(self, state: tuple[dict[str, Any], list[Any], str]) -> list[str]:
        return list(state[0]) + [str(item) for item in state[1]]

    def check(self, state: tuple[dict[str, Any], list[Any], str]) -> str | None:
        if state[2] != self.ballast:
            return "the ballast text is not the one put there"
        return None

    def from_file(self, path: Path) -> tuple[dict[str, Any], list[Any], str]:
        return self.state(_doc_of_log(path))

    def edit_file(self, path: Path, token: str) -> bool:
        # Another writer of the file: an update of its own appended to the log.
        def append(data: bytes) -> bytes:
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / path.name
                copy.write_bytes(data)
                doc: Doc = Doc()
                doc.get("map", type=Map)[token] = -1
                updatelog = UpdateLog(copy)
                updatelog.append([doc.get_update()])
                updatelog.close()
                return copy.read_bytes()

        return replace_file(path, append)


FREEFORM = FreeformRoom()
ROOMS: list[RoomKind] = [NotebookRoom(), TextRoom(), FREEFORM]


class Wire(ABC):
    """How the run reaches the servers of one wire and reads what they keep on disk."""

    name: str
    # Whether the rooms are files that other programs may change.
    files = False
    # The Redis through which the servers share their rooms, if they do.
    redis: RedisServer | None = None

    def __init__(self, store: Path) -> None:
        self.store = store

    @abstractmethod
    def servers(self) -> list[ServerProcess]:
        """The servers of the run (more than one share the rooms)."""

    @abstractmethod
    def client(self, room: RoomKind, port: int, **options: Any) -> ChannelClient: ...

    @abstractmethod
    def on_disk(self, room: RoomKind) -> Any:
        """The content of a room as the stopped server left it on disk."""


class WebsocketWire(Wire):
    name = "websocket"

    def servers(self) -> list[ServerProcess]:
        return [WebsocketProcess(self.store)]

    def client(self, room: RoomKind, port: int, **options: Any) -> ChannelClient:
        client = connect("websocket", id=f"rooms/{room.file}", port=port, **options)
        assert isinstance(client, ChannelClient)
        return client

    def on_disk(self, room: RoomKind) -> Any:
        return room.state(_doc_of_log(log_path(self.store / "logs", f"rooms/{room.file}")))


class JupyterWire(Wire):
    name = "jupyter"
    files = True
    # Saves are rare enough that another program's change seldom meets one, and the file
    # is looked at often, so such changes merge quickly.
    options = ("--RoomsApp.save_delay=0.5", "--RoomsApp.poll_interval=0.2")

    def servers(self) -> list[ServerProcess]:
        return [JupyterProcess(self.store, *self.options)]

    def client(self, room: RoomKind, port: int, **options: Any) -> ChannelClient:
        url = f"http://127.0.0.1:{port}/"
        client = connect("jupyter", id=room.file, url=url, token=JUPYTER_TOKEN, **options)
        assert isinstance(client, ChannelClient)
        return client

    def path(self, room: RoomKind) -> Path:
        return self.store / "root" / room.file

    def on_disk(self, room: RoomKind) -> Any:
        return room.from_file(self.path(room))


class RedisWire(JupyterWire):
    """Two ``jupyter server`` processes on one root (as replicas on shared storage),
    sharing their rooms through a Redis of the run's own (``redis-server``, its data
    appended to disk at every write, so that a restart of it loses nothing)."""

    name = "redis"

    def __init__(self, store: Path) -> None:
        super().__init__(store)
        (store / "redis").mkdir()
        self.redis = RedisServer(store / "redis")

    def servers(self) -> list[ServerProcess]:
        assert self.redis is not None
        # The saver's role passes quickly to the other server when the saver dies; yet
        # the lock outlasts what a server stalls for here (a merge or save of the run's
        # notebook of thousands of cells takes a second or two of a loaded machine's
        # time), or no save and no merge would ever finish under it.
        options = (
            *self.options,
            "--RoomsApp.redis_lock_ttl=3",
            f"--RoomsApp.redis_url={self.redis.url}",
        )
        root = self.store / "root"
        return [JupyterProcess(self.store / f"server-{i}", *options, root=root) for i in (0, 1)]


WIRES: dict[str, Callable[[Path], Wire]] = {
    "websocket": WebsocketWire,
    "jupyter": JupyterWire,
    "redis": RedisWire,
}


@dataclass
class Report:
    wire: str
    seed: int
    edits: int = 0
    outside_edits: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    checked_after_restarts: int = 0
    resets: int = 0
    ballast: int = 0

    def on_status(self, status: str, details: dict[str, Any]) -> None:
        """A client's status callback: a reset (a new history) would drop its edits."""
        if status == "reset":
            self.resets += 1

    def __str__(self) -> str:
        faults = ", ".join(f"{n} {kind}" for kind, n in sorted(self.faults.items())) or "none"
        ballast = f" ({self.ballast / 1e6:.1f} MB of ballast)" if self.ballast else ""
        return (
            f"{self.wire} wire, seed {self.seed}{ballast}: {self.edits} edits by clients, "
            f"{self.outside_edits} by other programs in the files; faults: {faults}; "
            f"{self.checked_after_restarts} edits the server had were checked after "
            f"restarts and kills"
        )


class Writer:
    """One user: a client per room, all through one proxy, making random edits."""

    def __init__(
        self, number: int, wire: Wire, proxy: Proxy, rng: random.Random, report: Report
    ) -> None:
        self.number = number
        self.wire = wire
        self.proxy = proxy
        self.rng = rng
        self.report = report
        self.made: dict[str, list[str]] = {room.name: [] for room in ROOMS}
        self.clients: dict[str, ChannelClient] = {}

    def describe(self) -> str:
        parts = []
        for name, client in self.clients.items():
            parts.append(
                f"w{self.number}/{name} connected={client.connected.is_set()} "
                f"synchronized={client.synchronized.is_set()} "
                f"close={client.close_code} {client.close_reason!r}"
            )
        return "; ".join(parts) or f"w{self.number} not started"

    async def run(self, stop_editing: anyio.Event, leave: anyio.Event, *, task_status: Any) -> None:
        """Join every room (then report started), edit until told to stop, then leave."""
        async with anyio.create_task_group() as tg:
            for room in ROOMS:
                await tg.start(self._use, room, stop_editing, leave)
            task_status.started()

    async def _use(
        self, room: RoomKind, stop_editing: anyio.Event, leave: anyio.Event, *, task_status: Any
    ) -> None:
        client = self.wire.client(room, self.proxy.port, max_backoff=0.5)
        client.on_status(self.report.on_status)
        self.clients[room.name] = client
        made = self.made[room.name]
        async with client:
            task_status.started()
            while not stop_editing.is_set():
                token = f"w{self.number}.{len(made)}{END}"
                made.append(token)
                room.edit(client.doc, token, self.rng, self.number)
                self.report.edits += 1
                await anyio.sleep(self.rng.uniform(0.01, 0.1))
            await leave.wait()


class Run:
    """One fault run: the servers, the writers and observers, and the faults."""

    def __init__(
        self, wire: Wire, seconds: float, seed: int, writers: int, ballast: int = 0
    ) -> None:
        self.wire = wire
        self.seconds = seconds
        self.ballast = ballast
        self.rng = random.Random(seed)
        self.report = Report(wire.name, seed, ballast=ballast)
        self.servers = wire.servers()
        # Writers take the servers in turn.
        self.proxies = [Proxy(self.servers[i % len(self.servers)].port) for i in range(writers)]
        # An observer per room and server, through a proxy that is never cut: they see
        # what their server has.
        self.observer_proxies = [Proxy(server.port) for server in self.servers]
        self.team = [
            Writer(i, wire, self.proxies[i], random.Random(self.rng.random()), self.report)
            for i in range(writers)
        ]
        self.observers: list[dict[str, ChannelClient]] = [{} for _ in self.servers]
        self.outside: dict[str, list[str]] = {room.name: [] for room in ROOMS}

    def warnings(self) -> str:
        """What the servers last logged about rooms, and their warnings."""
        if len(self.servers) == 1:
            return self.servers[0].warnings()
        return "".join(
            f"\n[server {i}]{warnings}"
            for i, server in enumerate(self.servers)
            if (warnings := server.warnings())
        )

    async def go(self) -> Report:
        line = f"ballast of seed {self.report.seed}{END}\n"
        ballast = (line * (self.ballast // len(line) + 1))[: self.ballast]
        FREEFORM.ballast = hashlib.sha256(ballast.encode()).hexdigest()
        stop_editing = anyio.Event()
        leave = anyio.Event()
        if self.wire.redis is not None:
            self.wire.redis.start()
        try:
            for server in self.servers:
                await server.start()
            if ballast:
                await self._put_ballast(ballast)
            async with anyio.create_task_group() as relays:
                # Listening before any client connects: a first connection does not retry.
                for proxy in [*self.proxies, *self.observer_proxies]:
                    await relays.start(proxy.serve)
                async with anyio.create_task_group() as clients:
                    for observers, proxy in zip(self.observers, self.observer_proxies, strict=True):
                        for room in ROOMS:
                            client = self.wire.client(room, proxy.port, max_backoff=0.2)
                            client.on_status(self.report.on_status)
                            observers[room.name] = client
                            await clients.start(self._observe, client, leave)
                    # Faults start once everyone is in: a first connection does not retry.
                    for writer in self.team:
                        await clients.start(writer.run, stop_editing, leave)
                    await self._inject_faults(relays)
                    stop_editing.set()
                    final = await self._converged()
                    if self.wire.redis is not None:
                        await self._saved_by_a_saver()
                    # Leaving with nothing pending must be quick and clean.
                    leave.set()
                relays.cancel_scope.cancel()
        finally:
            try:
                for server in self.servers:
                    await server.stop(signal.SIGTERM)
            finally:
                if self.wire.redis is not None:
                    self.wire.redis.stop()
        for room in ROOMS:
            on_disk = self.wire.on_disk(room)
            assert on_disk == final[room.name], (
                f"{self.report}: the {room.name} room on disk differs from the clients: "
                f"{on_disk!r:.300} != {final[room.name]!r:.300}{self.warnings()}"
            )
        assert self.report.resets == 0, f"{self.report}: {self.report.resets} clients reset"
        return self.report

    async def _put_ballast(self, text: str) -> None:
        """Put the ballast text in the free-form room, straight to the server."""
        client = self.wire.client(FREEFORM, self.servers[0].port, reconnect=False)
        async with client:
            client.doc.get(BALLAST, type=Text).insert(0, text)

    async def _observe(
        self, client: ChannelClient, leave: anyio.Event, *, task_status: Any
    ) -> None:
        async with client:
            task_status.started()
            await leave.wait()

    async def _inject_faults(self, tg: TaskGroup) -> None:
        kinds = ["cut", "cut", "stall", "restart", "kill"]
        if self.wire.files:
            kinds += ["outside"] * 4
        if self.wire.redis is not None:
            kinds += ["redis"]
        deadline = time.monotonic() + self.seconds
        writers = self.proxies
        # Every kind once first, in a seeded order, so that even a short run on a slow
        # machine tries them all; then at random.
        first = self.rng.sample(sorted(set(kinds)), k=len(set(kinds)))
        while time.monotonic() < deadline or first:
            await anyio.sleep(self.rng.uniform(0.2, 1.0))
            fault = first.pop() if first else self.rng.choice(kinds)
            self.report.faults[fault] += 1
            self._note(fault)
            if fault == "cut":
                self.rng.choice(writers).cut()
            elif fault == "stall":
                tg.start_soon(self.rng.choice(writers).stall, self.rng.uniform(0.2, 2.0))
            elif fault == "outside":
                self._edit_outside()
            elif fault == "redis":
                await self._restart_redis(self.rng.uniform(0.1, 2.0))
            else:
                await self._restart(signal.SIGKILL if fault == "kill" else signal.SIGTERM)
        # However few faults fit in the time, every run restarts and kills at least once.
        for fault, sig in (("restart", signal.SIGTERM), ("kill", signal.SIGKILL)):
            if not self.report.faults[fault]:
                self.report.faults[fault] += 1
                await self._restart(sig)

    def _edit_outside(self) -> None:
        assert isinstance(self.wire, JupyterWire)
        room = self.rng.choice(ROOMS)
        path = self.wire.path(room)
        if not path.exists():
            # Not saved yet: the room creates it.
            return
        made = self.outside[room.name]
        token = f"o.{len(made)}{END}"
        if room.edit_file(path, token):
            made.append(token)
            self.report.outside_edits += 1
            self._note(f"outside: {token} in {room.file}")

    def _note(self, what: str) -> None:
        """Note a fault in the store's ``faults.log``, on the server log's clock (local
        time), to read beside the server's log after a failure (``--keep``)."""
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        with open(self.wire.store / "faults.log", "a") as notes:
            notes.write(f"{stamp} {what}\n")

    async def _restart(self, sig: int) -> None:
        """Stop a server (gracefully or not) and start it again; before anyone else
        reconnects to it, check that each room has all an observer had seen.

        With one server, the observer is its own, and the room must have it all once it
        is open. With several, a server killed may not have passed on its own clients'
        latest changes (they still have them, and give them back as they reconnect), so
        the observer is another server's: what it saw, the restarted server must get
        from Redis, within ``SHARED_CATCH_UP`` seconds.
        """
        if len(self.servers) == 1:
            stopped, witness = 0, 0
        else:
            stopped = self.rng.randrange(len(self.servers))
            witness = (stopped + 1) % len(self.servers)
        self._note(f"server {stopped} stopped with {signal.Signals(sig).name}")
        server = self.servers[stopped]
        observers = self.observers[witness]
        seen = {room.name: room.tokens(room.state(observers[room.name].doc)) for room in ROOMS}
        proxies = [*self.proxies, *self.observer_proxies]
        for proxy in proxies:
            proxy.held = True
        try:
            await server.stop(sig)
            await server.start()
            for room in ROOMS:
                fresh = self.wire.client(room, server.port, reconnect=False)
                async with fresh:
                    lost = self._lacks(room, fresh, seen[room.name])
                    if lost and len(self.servers) > 1:
                        with anyio.move_on_after(SHARED_CATCH_UP):
                            while lost := self._lacks(room, fresh, seen[room.name]):
                                await anyio.sleep(0.05)
                assert not lost, (
                    f"{self.report}: after a restart of server {stopped} with "
                    f"{signal.Signals(sig).name}, the {room.name} room lacks {len(lost)} "
                    f"edits it had: {lost[:5]}{self.warnings()}"
                )
                self.report.checked_after_restarts += len(seen[room.name])
        finally:
            for proxy in proxies:
                proxy.held = False

    @staticmethod
    def _lacks(room: RoomKind, client: ChannelClient, seen: list[str]) -> list[str]:
        found = set(room.tokens(room.state(client.doc)))
        return [token for token in seen if token not in found]

    async def _restart_redis(self, down: float) -> None:
        """Stop Redis, leave it down for ``down`` seconds, and start it again (it keeps
        its data on disk: what it had, it has again)."""
        redis = self.wire.redis
        assert redis is not None
        await anyio.to_thread.run_sync(redis.stop)
        await anyio.sleep(down)
        await anyio.to_thread.run_sync(redis.start)

    async def _converged(self) -> dict[str, Any]:
        """Wait until every client holds the same content with every edit once."""
        final: dict[str, Any] = {}
        for room in ROOMS:
            made = [token for writer in self.team for token in writer.made[room.name]]
            expected = sorted(made + self.outside[room.name])
            clients = {
                f"observer{i}": observers[room.name] for i, observers in enumerate(self.observers)
            }
            clients.update({f"w{w.number}": w.clients[room.name] for w in self.team})
            with anyio.move_on_after(60):
                while True:
                    states = {name: room.state(c.doc) for name, c in clients.items()}
                    first = states["observer0"]
                    if (
                        all(state == first for state in states.values())
                        and sorted(room.tokens(first)) == expected
                        and room.check(first) is None
                    ):
                        final[room.name] = first
                        break
                    await anyio.sleep(0.05)
            if room.name not in final:
                raise AssertionError(self._difference(room, states, expected))
        return final

    async def _saved_by_a_saver(self) -> None:
        """Wait until, for every room, one of the servers is its saver and has saved it.

        A saver killed near the end holds its lock until the lock runs out; servers
        stopped before then would leave the last edits in Redis only, not in the file
        (the next server to open the room saves them). So the run waits for a saver
        before it stops the servers, as a deployment that keeps running gets one.
        """
        with anyio.move_on_after(60):
            while True:
                settled = set()
                for server in self.servers:
                    assert isinstance(server, JupyterProcess)
                    with contextlib.suppress(OSError, HTTPClientError):
                        for room_id, room in (await server.rooms()).items():
                            if room["saver"] and room["unsaved"] is False:
                                settled.add(room_id)
                if settled >= {room.file for room in ROOMS}:
                    return
                await anyio.sleep(0.1)
        raise AssertionError(f"{self.report}: no server saved every room{self.warnings()}")

    def _difference(self, room: RoomKind, states: dict[str, Any], expected: list[str]) -> str:
        problems = []
        for name, state in states.items():
            found = Counter(room.tokens(state))
            missing = sorted(set(expected) - set(found))
            doubled = [token for token, n in found.items() if n > 1]
            extra = room.check(state)
            if missing or doubled or extra:
                problems.append(
                    f"{name} misses {len(missing)} edits {missing[:5]}, has {len(doubled)} "
                    f"twice {doubled[:5]}{'; ' + extra if extra else ''}"
                )
        if not problems:
            problems.append("the clients differ")
        writers = "; ".join(writer.describe() for writer in self.team)
        return (
            f"{self.report}: {room.name} room: {' / '.join(problems)}; writers: {writers}"
            f"{self.warnings()}"
        )


async def run(
    seconds: float,
    seed: int,
    store: Path,
    writers: int = 3,
    wire: str = "websocket",
    ballast: int = 0,
) -> Report:
    """Run the fault run and check its outcome; raise AssertionError on any loss.

    Args:
        seconds: How long to inject faults (convergence and checks come after).
        seed: The seed of every random choice the run makes.
        store: An empty directory for the server's state.
        writers: How many users edit (each with one client per room).
        wire: ``"websocket"``, ``"jupyter"`` or ``"redis"`` (two Jupyter servers sharing
            their rooms through Redis).
        ballast: Bytes of text the free-form room holds besides the edits.

    Returns:
        What the run did.
    """
    return await Run(WIRES[wire](store), seconds, seed, writers, ballast).go()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wire", choices=sorted(WIRES), default="jupyter")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(2), "big"))
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument(
        "--ballast", type=float, default=0, help="MB of text the free-form room holds besides"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the run's state here (a new or empty directory): the files, the rooms' "
        "logs, each server's server.log, and faults.log, the faults as they were made",
    )
    args = parser.parse_args()
    if args.ballast < 0:
        parser.error("--ballast must not be negative")
    if args.keep is not None and args.keep.exists():
        if not args.keep.is_dir() or any(args.keep.iterdir()):
            parser.error(f"--keep {args.keep}: not an empty directory")
    ballast = int(args.ballast * 1e6)
    with contextlib.ExitStack() as stack:
        if args.keep is None:
            store = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        else:
            store = args.keep
            store.mkdir(parents=True, exist_ok=True)
        report = anyio.run(run, args.seconds, args.seed, store, args.writers, args.wire, ballast)
    print(report)


if __name__ == "__main__":
    main()
