"""A randomized fault run: clients edit one room while connections drop, stall, and the
server restarts or is killed. Seeded, bounded in time, and it says what it did.

The short run is part of the test suite (tests/test_faults.py); a longer one is::

    python tests/faults.py --seconds 300 --seed 7
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import SocketStream, TaskGroup
from pycrdt import Array, Doc, Map, Text

from jupyter_rooms import ChannelClient, ClientWire, connect
from jupyter_rooms.logroom import log_path
from jupyter_rooms.updatelog import UpdateLog

from helpers import free_port

ROOM = "shared/doc"
# Tokens end with this, so an insert never lands inside another token.
END = "|"


class Proxy:
    """A TCP relay between one client and the server, which can cut or stall the link."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._links: set[TaskGroup] = set()
        self._resume = anyio.Event()
        self._resume.set()

    async def serve(self) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        await listener.serve(self._link)

    async def _link(self, client: SocketStream) -> None:
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


class ServerProcess:
    """``python -m jupyter_rooms`` keeping its rooms in a directory, on a fixed port."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        command = [sys.executable, "-m", "jupyter_rooms", "--port", str(self.port)]
        command += ["--store", str(self.store), "--log-level", "WARNING"]
        # Popen returns at once; the wait for the port below is asynchronous.
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
        with anyio.fail_after(20):
            while True:
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", self.port)
                except OSError:
                    await anyio.sleep(0.05)
                    continue
                await stream.aclose()
                return

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        self.process.send_signal(sig)
        process = self.process
        self.process = None
        with anyio.fail_after(20):
            while process.poll() is None:
                await anyio.sleep(0.02)
        if sig == signal.SIGTERM and process.returncode != 0:
            raise RuntimeError(f"the server exited with {process.returncode} on SIGTERM")


@dataclass
class Report:
    seed: int
    edits: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    checked_after_kill: int = 0

    def __str__(self) -> str:
        faults = ", ".join(f"{n} {kind}" for kind, n in sorted(self.faults.items())) or "none"
        return (
            f"seed {self.seed}: {self.edits} edits; faults: {faults}; "
            f"{self.checked_after_kill} relayed edits checked on disk after kills"
        )


def tokens(text: str) -> list[str]:
    return [token + END for token in text.split(END) if token]


State = tuple[str, dict[str, object], list[object]]


def content(doc: Doc) -> State:
    return (
        str(doc.get("text", type=Text)),
        doc.get("map", type=Map).to_py() or {},
        doc.get("array", type=Array).to_py() or [],
    )


class Writer:
    """One client making random edits through its own proxy."""

    def __init__(self, number: int, proxy: Proxy, rng: random.Random, report: Report) -> None:
        self.number = number
        self.proxy = proxy
        self.rng = rng
        self.report = report
        self.made: list[str] = []
        self.client: ChannelClient | None = None

    def describe(self) -> str:
        client = self.client
        if client is None:
            return f"w{self.number} not started"
        return (
            f"w{self.number} connected={client.connected.is_set()} "
            f"synchronized={client.synchronized.is_set()} links={len(self.proxy._links)} "
            f"close={client.close_code} {client.close_reason!r}"
        )

    def edit(self, doc: Doc) -> None:
        token = f"w{self.number}.{len(self.made)}{END}"
        self.made.append(token)
        kind = self.rng.randrange(3)
        if kind == 0:
            text = doc.get("text", type=Text)
            current = str(text)
            boundaries = [0] + [i + 1 for i, char in enumerate(current) if char == END]
            index = self.rng.choice(boundaries)
            text.insert(len(current[:index].encode()), token)
        elif kind == 1:
            doc.get("map", type=Map)[token] = self.number
        else:
            array = doc.get("array", type=Array)
            array.insert(self.rng.randint(0, len(array)), token)
        self.report.edits += 1

    async def run(self, stop_editing: anyio.Event, leave: anyio.Event) -> None:
        client = connect("websocket", id=ROOM, port=self.proxy.port, max_backoff=0.5)
        assert isinstance(client, ChannelClient)
        self.client = client
        async with client:
            while not stop_editing.is_set():
                self.edit(client.doc)
                await anyio.sleep(self.rng.uniform(0.005, 0.05))
            await leave.wait()


def persisted(store: Path) -> Doc:
    doc = Doc()
    for update in UpdateLog(log_path(store, ROOM)).load().updates:
        doc.apply_update(update)
    return doc


async def _inject_faults(
    seconds: float,
    rng: random.Random,
    report: Report,
    server: ServerProcess,
    proxies: list[Proxy],
    observer: ClientWire,
    tg: TaskGroup,
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await anyio.sleep(rng.uniform(0.2, 1.0))
        fault = rng.choice(["cut", "cut", "stall", "restart", "kill"])
        report.faults[fault] += 1
        if fault == "cut":
            rng.choice(proxies).cut()
        elif fault == "stall":
            tg.start_soon(rng.choice(proxies).stall, rng.uniform(0.2, 2.0))
        elif fault == "restart":
            await server.stop(signal.SIGTERM)
            await server.start()
        else:
            # What the observer got, the server had applied and written.
            relayed = content(observer.doc)
            await server.stop(signal.SIGKILL)
            on_disk = content(persisted(server.store))
            assert set(tokens(relayed[0])) <= set(tokens(on_disk[0]))
            assert set(relayed[1]) <= set(on_disk[1])
            assert set(map(str, relayed[2])) <= set(map(str, on_disk[2]))
            report.checked_after_kill += len(tokens(relayed[0])) + len(relayed[1])
            report.checked_after_kill += len(relayed[2])
            await server.start()


async def _converged(report: Report, observer: ClientWire, team: list[Writer]) -> State:
    """Wait until every client holds the same document with every edit once; return it."""
    made = sorted(token for writer in team for token in writer.made)
    clients = [observer] + [w.client for w in team if w.client is not None]
    names = ["observer"] + [f"w{w.number}" for w in team]
    with anyio.move_on_after(60):
        while True:
            states = [content(c.doc) for c in clients]
            if all(s == states[0] for s in states) and _holds(states[0], made):
                return states[0]
            await anyio.sleep(0.05)
    for name, state in zip(names, states, strict=True):
        found = Counter(tokens(state[0]) + list(state[1]) + list(map(str, state[2])))
        missing = set(made) - set(found)
        doubled = [token for token, n in found.items() if n > 1]
        assert not missing and not doubled, (
            f"{report}: {name} misses {len(missing)} edits {sorted(missing)[:5]} and "
            f"has {len(doubled)} twice {doubled[:5]}; writers: "
            + "; ".join(writer.describe() for writer in team)
        )
    raise AssertionError(f"{report}: clients differ")


async def run(seconds: float, seed: int, store: Path, writers: int = 3) -> Report:
    """Run the fault run and check its outcome; raise AssertionError on any loss."""
    rng = random.Random(seed)
    report = Report(seed)
    server = ServerProcess(store)
    await server.start()
    proxies = [Proxy(server.port) for _ in range(writers)]
    team = [Writer(i, proxies[i], random.Random(rng.random()), report) for i in range(writers)]
    stop_editing = anyio.Event()
    leave = anyio.Event()
    try:
        async with (
            anyio.create_task_group() as relays,
            connect("websocket", id=ROOM, port=server.port, max_backoff=0.2) as observer,
        ):
            for proxy in proxies:
                relays.start_soon(proxy.serve)
            async with anyio.create_task_group() as clients_group:
                for writer in team:
                    clients_group.start_soon(writer.run, stop_editing, leave)
                await _inject_faults(seconds, rng, report, server, proxies, observer, relays)
                stop_editing.set()
                final = await _converged(report, observer, team)
                # Leaving with nothing pending must be quick and clean.
                leave.set()
            relays.cancel_scope.cancel()
    finally:
        await server.stop(signal.SIGTERM)
    assert content(persisted(store)) == final, "the server's log differs from the clients"
    return report


def _holds(state: State, made: list[str]) -> bool:
    found = tokens(state[0]) + list(state[1]) + [str(item) for item in state[2]]
    return sorted(found) == made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(2), "big"))
    parser.add_argument("--writers", type=int, default=3)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as store:
        report = anyio.run(run, args.seconds, args.seed, Path(store), args.writers)
    print(report)


if __name__ == "__main__":
    main()
