"""Load test: many clients in many rooms making steady edits against one server.

The server runs in a process of its own (a ``jupyter server`` with the extension, or
``python -m jupyter_rooms`` with ``--wire websocket``); the clients share this process.
Each client appends a token to its room's text at a steady rate; every client of a room
records when each of the others' tokens arrives. At the end it reports the edits
delivered per second, the latency from an edit to its arrival at the other clients of
its room (median, p99, max), errors (disconnections, error notices, edits that never
arrived: there must be none), and the server's resident memory once every client is in
and at the end. Everything listens and connects on 127.0.0.1, and the run is bounded in
time and in edits.

    python bench/load.py                        # 200 clients, 20 rooms, 60 s, jupyter
    python bench/load.py --wire websocket
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psutil
from localjupyter import free_port, jupyter_command
from pycrdt import Map, MapEvent, Text, TextEvent
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from jupyter_rooms import ChannelClient, connect

TOKEN = "load-test-token"
SEPARATOR = ";"
_TOKEN = re.compile(r"c(\d+)\.(\d+);")


class Server:
    """The server under load, in its own process."""

    def __init__(self, wire: str, directory: Path) -> None:
        self.wire = wire
        self.directory = directory
        self.port = free_port()
        self.root = directory / "root"
        self.root.mkdir()
        env = dict(os.environ)
        for name in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR"):
            env[name] = str(directory / name.lower())
        if wire == "jupyter":
            command = jupyter_command(
                "server", self.root, self.port, TOKEN, "--ServerApp.log_level=WARN"
            )
        else:
            command = [sys.executable, "-m", "jupyter_rooms", "--port", str(self.port)]
            command += ["--store", str(directory / "logs"), "--log-level", "WARNING"]
        self.command = command
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.directory / "server.log", "ab") as output:
            return subprocess.Popen(self.command, env=self.env, stdout=output, stderr=output)

    async def start(self) -> None:
        self.process = self._spawn()
        with anyio.fail_after(60):
            while not await self._ready():
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode}")
                await anyio.sleep(0.1)

    async def _ready(self) -> bool:
        if self.wire == "websocket":
            try:
                stream = await anyio.connect_tcp("127.0.0.1", self.port)
            except OSError:
                return False
            await stream.aclose()
            return True
        try:
            await AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{self.port}/api/rooms",
                headers={"Authorization": f"token {TOKEN}"},
                request_timeout=5,
            )
        except (OSError, HTTPClientError):
            return False
        return True

    def rss(self) -> int:
        """The server's resident memory, in bytes."""
        assert self.process is not None
        return int(psutil.Process(self.process.pid).memory_info().rss)

    async def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(30):
            # A process's exit has no event to wait on here: poll it, with a deadline.
            while process.poll() is None:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        if process.poll() is None:
            process.kill()
            process.wait()

    def client(self, room: str, **options: Any) -> ChannelClient:
        if self.wire == "jupyter":
            url = f"http://127.0.0.1:{self.port}/"
            client = connect("jupyter", id=room, url=url, token=TOKEN, **options)
        else:
            client = connect("websocket", id=room, port=self.port, **options)
        assert isinstance(client, ChannelClient)
        return client


@dataclass
class Results:
    wire: str
    clients: int
    rooms: int
    seconds: float
    rate: float
    edits: int = 0
    deliveries: int = 0
    expected_deliveries: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    # Set once the clients leave: disconnections from then on are no errors.
    leaving: bool = False
    # "append": each edit adds a token to the room's text (the documents grow);
    # "set": each edit overwrites its client's key in a Map (they stay the same size).
    edits_kind: str = "append"

    @property
    def delivered_per_second(self) -> float:
        return self.deliveries / self.seconds

    def __str__(self) -> str:
        latency = ", ".join(f"{k} {v:.1f} ms" for k, v in self.latency_ms.items())
        rss = ", ".join(f"{k} {v:.1f} MB" for k, v in self.rss_mb.items())
        return (
            f"{self.wire} wire, {self.edits_kind} edits: {self.clients} clients in "
            f"{self.rooms} rooms, "
            f"{self.seconds:.0f} s at {self.rate:g} edits/s each: {self.edits} edits "
            f"({self.edits / self.seconds:.0f}/s), {self.deliveries} of "
            f"{self.expected_deliveries} deliveries ({self.delivered_per_second:.0f}/s); "
            f"latency edit -> other clients: {latency}; errors: {self.errors} "
            f"{self.error_kinds or ''}; server RSS: {rss}"
        )


class LoadClient:
    """One client: appends a token to its room's text at a steady rate and times the
    arrival of everyone else's."""

    def __init__(self, number: int, room: int, results: Results, sent: dict[str, float]) -> None:
        self.number = number
        self.room = room
        self.results = results
        self.sent = sent
        self.made = 0
        self.last = ""
        self.shared: Text | Map | None = None
        self.seen = 0
        self.latencies: list[float] = []

    def _error(self, kind: str) -> None:
        self.results.errors += 1
        self.results.error_kinds[kind] = self.results.error_kinds.get(kind, 0) + 1

    def _on_status(self, status: str, details: dict[str, Any]) -> None:
        if status in ("disconnected", "error", "reset") and not self.results.leaving:
            self._error(status)

    def _on_text(self, event: TextEvent) -> None:
        inserted = [op.get("insert") for op in event.delta]
        self._arrived([value for value in inserted if isinstance(value, str)])

    def _on_map(self, event: MapEvent) -> None:
        changes: Any = event.keys
        self._arrived([str(change.get("newValue", "")) for change in changes.values()])

    def _arrived(self, values: list[str]) -> None:
        now = time.perf_counter()
        for value in values:
            for match in _TOKEN.finditer(value):
                if int(match.group(1)) == self.number:
                    continue
                sent = self.sent.get(match.group(0))
                if sent is not None:
                    self.latencies.append(now - sent)
                    self.seen += 1

    async def run(
        self,
        server: Server,
        start: anyio.Event,
        stop_at: Callable[[], float],
        leave: anyio.Event,
        *,
        task_status: Any,
    ) -> None:
        overwrite = self.results.edits_kind == "set"
        # A text file's room, or a free-form room for a Map.
        client = server.client(f"room{self.room}.{'yroom' if overwrite else 'txt'}", timeout=60)
        client.on_status(self._on_status)
        async with client:
            shared: Text | Map = (
                client.doc.get("latest", type=Map)
                if overwrite
                else client.doc.get("source", type=Text)
            )
            self.shared = shared
            subscription = shared.observe(self._on_map if overwrite else self._on_text)
            task_status.started()
            await start.wait()
            period = 1 / self.results.rate
            # Spread the clients' edits over the period rather than all at once.
            next_edit = time.perf_counter() + period * (self.number % 97) / 97
            deadline = stop_at()
            while True:
                await anyio.sleep(max(0.0, next_edit - time.perf_counter()))
                if time.perf_counter() >= deadline:
                    break
                token = f"c{self.number}.{self.made}{SEPARATOR}"
                self.sent[token] = time.perf_counter()
                if isinstance(shared, Map):
                    shared[f"c{self.number}"] = token
                else:
                    shared.insert(len(shared), token)
                self.last = token
                self.made += 1
                self.results.edits += 1
                next_edit += period
            await leave.wait()
            shared.unobserve(subscription)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
    return ordered[index]


async def run(
    wire: str = "jupyter",
    clients: int = 200,
    rooms: int = 20,
    seconds: float = 60.0,
    rate: float = 1.0,
    directory: Path | None = None,
    edits: str = "append",
) -> Results:
    """Run the load test and return what it measured.

    Args:
        wire: ``"jupyter"`` or ``"websocket"``.
        clients: How many clients, spread evenly over the rooms.
        rooms: How many rooms.
        seconds: How long the clients edit.
        rate: Edits per second per client.
        directory: Where the server keeps its files (a temporary directory by default).
        edits: ``"append"`` (tokens appended to a text: the documents grow) or ``"set"``
            (each client overwrites its own key of a Map: they do not).

    Returns:
        The figures.
    """
    if directory is None:
        with tempfile.TemporaryDirectory() as tmp:
            return await run(wire, clients, rooms, seconds, rate, Path(tmp), edits)
    results = Results(wire, clients, rooms, seconds, rate, edits_kind=edits)
    server = Server(wire, directory)
    await server.start()
    sent: dict[str, float] = {}
    team = [LoadClient(i, i % rooms, results, sent) for i in range(clients)]
    start, leave = anyio.Event(), anyio.Event()
    started_at = 0.0
    try:
        async with anyio.create_task_group() as tg:
            for client in team:
                await tg.start(client.run, server, start, lambda: started_at + seconds, leave)
            results.rss_mb["all clients in"] = server.rss() / 2**20
            started_at = time.perf_counter()
            start.set()
            samples = []
            while time.perf_counter() < started_at + seconds:
                await anyio.sleep(min(5.0, max(0.0, started_at + seconds - time.perf_counter())))
                samples.append(server.rss())
            results.rss_mb["after 1/3 of the run"] = samples[len(samples) // 3] / 2**20
            results.rss_mb["end"] = samples[-1] / 2**20
            results.rss_mb["max"] = max(samples) / 2**20
            # Wait (bounded) for the last edits to arrive everywhere.
            with anyio.move_on_after(30):
                while not _arrived(team):  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            results.expected_deliveries = _expected(team)
            if edits == "set":
                # Overwritten values may travel merged, unseen: only the last ones count.
                stale = sum(1 for client in team if not _holds_latest(client, team))
                if stale:
                    results.errors += stale
                    results.error_kinds["not converged"] = stale
            results.leaving = True
            leave.set()
    finally:
        await server.stop()
    results.deliveries = sum(c.seen for c in team)
    missing = results.expected_deliveries - results.deliveries
    if missing and edits == "append":
        results.errors += missing
        results.error_kinds["undelivered"] = missing
    latencies = [latency for c in team for latency in c.latencies]
    if latencies:
        results.latency_ms = {
            "median": 1000 * _percentile(latencies, 0.5),
            "p99": 1000 * _percentile(latencies, 0.99),
            "max": 1000 * max(latencies),
        }
    return results


def _holds_latest(client: LoadClient, team: list[LoadClient]) -> bool:
    """Whether a client's Map holds the last value of every client of its room."""
    expected = {f"c{c.number}": c.last for c in team if c.room == client.room and c.made}
    return client.shared is not None and client.shared.to_py() == expected


def _arrived(team: list[LoadClient]) -> bool:
    if team and team[0].results.edits_kind == "set":
        return all(_holds_latest(client, team) for client in team)
    return sum(client.seen for client in team) >= _expected(team)


def _expected(team: list[LoadClient]) -> int:
    """Deliveries due: each client's edits, to every other client of its room."""
    size: dict[int, int] = {}
    for client in team:
        size[client.room] = size.get(client.room, 0) + 1
    return sum((size[client.room] - 1) * client.made for client in team)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wire", choices=["jupyter", "websocket"], default="jupyter")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1.0, help="edits per second per client")
    parser.add_argument(
        "--edits",
        choices=["append", "set"],
        default="append",
        help="append tokens to a text (documents grow), or overwrite a Map's keys (they "
        "do not: any growth of the server's memory is then its own)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    results = anyio.run(
        run, args.wire, args.clients, args.rooms, args.seconds, args.rate, None, args.edits
    )
    print(results)
    if args.json:
        print(json.dumps(asdict(results)))
    sys.exit(1 if results.errors else 0)


if __name__ == "__main__":
    main()
