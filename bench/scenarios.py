"""The benchmark's scenarios: the same work, by the same clients, on every server.

Each scenario takes a running server (or none, for the floor) and returns figures. The
clients run in this process, on one event loop, except the burst's readers, which run
in worker processes (``readers.py``) so that a burst measures the server and not them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import nbformat
import psutil
from jupyter_ydoc import YNotebook
from pycrdt import Array, Doc, Text, TransactionEvent
from readers import ReaderPool
from targets import Server, Target
from yclient import YClient

# How many connections are opened at once.
CONNECT_CONCURRENCY = 25


@dataclass
class Params:
    """How much work each scenario does."""

    readers: Sequence[int] = (2, 10, 50)
    latency_edits: int = 200
    burst_readers: Sequence[int] = (2, 50)
    burst_edits: int = 5000
    # The burst's readers run in this many worker processes.
    reader_processes: int = 2
    notebook_cells: int = 2000
    warm_opens: int = 3
    rooms: int = 1000
    timeout: float = 300.0

    @classmethod
    def quick(cls) -> Params:
        return cls(
            readers=(2,),
            latency_edits=20,
            burst_readers=(2,),
            burst_edits=200,
            notebook_cells=50,
            warm_opens=1,
            rooms=20,
            timeout=30.0,
        )


@dataclass
class Figure:
    """One measured figure (or why it is missing)."""

    scenario: str
    metric: str
    unit: str
    better: str
    value: float | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def rss_mb(pid: int) -> float:
    """The resident memory of a process, in MB."""
    return float(psutil.Process(pid).memory_info().rss) / 1e6


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used so far (user and system), in seconds."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of values, by linear interpolation."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


async def open_clients(
    server: Server,
    path: str,
    kind: str,
    count: int,
    docs: Callable[[], Doc] = Doc,
) -> list[YClient]:
    """Connect ``count`` clients to one room and wait until each has synced."""
    semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one() -> YClient:
        async with semaphore:
            url, headers = await server.room_url(path, kind)
            client = await YClient.open(url, headers=headers, doc=docs())
            await client.synced.wait()
            return client

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def close_clients(clients: Sequence[YClient]) -> None:
    await asyncio.gather(*(client.close() for client in clients))


class LengthWatch:
    """Records when each reader's text reaches a length.

    Args:
        clients: The readers.
    """

    def __init__(self, clients: Sequence[YClient]) -> None:
        self.texts = [client.doc.get("source", type=Text) for client in clients]
        self.clients = clients
        self.length = 0
        self.pending: set[int] = set()
        self.last = 0.0
        self.failure: str | None = None
        self.done = asyncio.Event()
        for index, client in enumerate(clients):
            client.on_change = lambda index=index: self._check(index)

    def expect(self, length: int) -> None:
        """Start waiting for every reader to reach ``length`` characters."""
        self.length = length
        self.pending = set(range(len(self.texts)))
        self.done.clear()
        for index in range(len(self.texts)):
            self._check(index)

    def _check(self, index: int) -> None:
        if index in self.pending:
            if len(self.texts[index]) >= self.length:
                self.pending.discard(index)
                if not self.pending:
                    self.last = time.perf_counter()
                    self.done.set()
            elif self.clients[index].closed:
                self.failure = f"a reader's connection ended: {self.clients[index].error!r}"
                self.done.set()

    async def wait(self) -> None:
        """Wait until every reader has reached the length."""
        await self.done.wait()
        if self.failure is not None:
            raise RuntimeError(self.failure)


async def _room_with_readers(
    server: Server, root: Path, name: str, readers: int
) -> tuple[YClient, list[YClient]]:
    (root / name).write_text("")
    writer = (await open_clients(server, name, "text", 1))[0]
    return writer, await open_clients(server, name, "text", readers)


async def latency(server: Server, target: Target, root: Path, params: Params) -> list[Figure]:
    """One writer makes one-character edits, one at a time; N readers wait for each."""
    figures = []
    for readers in params.readers:
        detail = {"readers": readers, "edits": params.latency_edits}
        p50 = Figure("latency", f"p50, N={readers}", "ms", "lower", detail=detail)
        p99 = Figure("latency", f"p99, N={readers}", "ms", "lower", detail=detail)
        figures += [p50, p99]
        clients: list[YClient] = []
        try:
            with anyio.fail_after(params.timeout):
                writer, others = await _room_with_readers(
                    server, root, f"latency-{readers}.txt", readers
                )
                clients = [writer, *others]
                text = writer.doc.get("source", type=Text)
                watch = LengthWatch(others)
                samples = []
                # A few unmeasured edits first, so that every path is warm.
                for index in range(params.latency_edits + 5):
                    start = time.perf_counter()
                    text += "x"
                    watch.expect(len(text))
                    await watch.wait()
                    if index >= 5:
                        samples.append((watch.last - start) * 1000)
            p50.value = percentile(samples, 50)
            p99.value = percentile(samples, 99)
        except Exception as exc:
            p50.error = p99.error = describe(exc, params)
        finally:
            await close_clients(clients)
    return figures


async def burst(server: Server, target: Target, root: Path, params: Params) -> list[Figure]:
    """The writer makes one-character edits as fast as it can; N readers converge.

    The writer, in this process, makes each edit and sends it at once as a message of
    its own (as a Yjs ``WebsocketProvider`` does), without waiting for anything but the
    socket's flow control. The readers run in worker processes (``readers.py``), so that
    their work overlaps the writer's and the server's instead of taking turns with them
    on one event loop. The time is from the first edit until the last reader's text has
    every edit; the texts are then checked equal to the writer's.
    """
    figures = []
    async with ReaderPool(params.reader_processes) as pool:
        for readers in params.burst_readers:
            figures += await _burst(server, root, params, pool, readers)
    return figures


async def _burst(
    server: Server, root: Path, params: Params, pool: ReaderPool, readers: int
) -> list[Figure]:
    detail: dict[str, Any] = {
        "readers": readers,
        "edits": params.burst_edits,
        "reader_processes": min(params.reader_processes, readers),
    }
    seconds = Figure("burst", f"converged, N={readers}", "s", "lower", detail=detail)
    rate = Figure("burst", f"edits/s, N={readers}", "edits/s", "higher", detail=detail)
    cpu = Figure("burst", f"server CPU, N={readers}", "s", "lower", detail=detail)
    writer: YClient | None = None
    converged: asyncio.Future[dict[str, Any]] | None = None
    try:
        with anyio.fail_after(params.timeout):
            name = f"burst-{readers}.txt"
            (root / name).write_text("")
            writer = (await open_clients(server, name, "text", 1))[0]
            await pool.open([await server.room_url(name, "text") for _ in range(readers)])
            text = writer.doc.get("source", type=Text)
            converged = await pool.expect(len(text) + params.burst_edits)
            server_cpu = cpu_seconds(server.pid)
            client_cpu = time.process_time()
            start = time.monotonic()
            for _ in range(params.burst_edits):
                text += "x"
                # At once, unless the socket's buffer is full.
                await writer.flushed()
            detail["writer_s"] = round(time.monotonic() - start, 4)
            result = await converged
            elapsed = result["at"] - start
            cpu.value = cpu_seconds(server.pid) - server_cpu
            detail["writer_cpu_s"] = round(time.process_time() - client_cpu, 3)
            detail["readers_cpu_s"] = round(result["cpu_s"], 3)
            detail["messages_per_reader"] = statistics.mean(result["received"])
            await pool.close()
        expected = hashlib.sha256(str(text).encode()).hexdigest()
        if any(digest != expected for digest in result["sha256"]):
            raise RuntimeError("the readers' texts differ from the writer's")
        seconds.value = elapsed
        rate.value = params.burst_edits / elapsed
    except Exception as exc:
        seconds.error = rate.error = cpu.error = describe(exc, params)
        if converged is not None:
            converged.cancel()
        # The readers' state is unknown: start afresh for the next figure.
        await pool.stop()
    finally:
        if writer is not None:
            await writer.close()
    return [seconds, rate, cpu]


def floor(params: Params) -> list[Figure]:
    """The burst with pycrdt alone: every update applied to every reader's document."""
    figures = []
    for readers in params.burst_readers:
        detail = {"readers": readers, "edits": params.burst_edits}
        writer = Doc()
        docs = [Doc() for _ in range(readers)]
        text = writer.get("source", type=Text)
        texts = [doc.get("source", type=Text) for doc in docs]

        def forward(event: TransactionEvent, docs: list[Doc] = docs) -> None:
            for doc in docs:
                doc.apply_update(event.update)

        subscription = writer.observe(forward)
        start = time.perf_counter()
        for _ in range(params.burst_edits):
            text += "x"
        elapsed = time.perf_counter() - start
        writer.unobserve(subscription)
        assert all(str(other) == str(text) for other in texts)
        figures += [
            Figure("burst", f"converged, N={readers}", "s", "lower", elapsed, detail=detail),
            Figure(
                "burst",
                f"edits/s, N={readers}",
                "edits/s",
                "higher",
                params.burst_edits / elapsed,
                detail=detail,
            ),
        ]
    return figures


def make_notebook(cells: int, seed: int = 0) -> dict[str, Any]:
    """A notebook of code cells with stream and display outputs, about 5 kB a cell."""
    rng = random.Random(seed)
    notebook = nbformat.v4.new_notebook()
    for index in range(cells):
        source = "\n".join(
            f"value_{index}_{line} = compute({rng.randrange(10**6)}, scale={rng.random():.6f})"
            for line in range(4)
        )
        lines = "".join(f"step {step}: loss={rng.random():.8f}\n" for step in range(40))
        image = base64.b64encode(rng.randbytes(2200)).decode()
        outputs = [
            nbformat.v4.new_output("stream", name="stdout", text=lines),
            nbformat.v4.new_output(
                "display_data",
                data={"text/plain": f"<Figure {index}>", "image/png": image},
            ),
        ]
        notebook.cells.append(
            nbformat.v4.new_code_cell(source, execution_count=index + 1, outputs=outputs)
        )
    return dict(notebook)


async def _open_notebook(
    server: Server, path: str, cells: int, doc: Doc | None = None
) -> tuple[YClient, float]:
    """Connect to a notebook's room; return the client and the seconds until it has it all."""
    start = time.perf_counter()
    url, headers = await server.room_url(path, "notebook")
    client = await YClient.open(url, headers=headers, doc=doc)
    array = client.doc.get("cells", type=Array)
    complete = asyncio.Event()

    def check() -> None:
        if len(array) >= cells and client.synced.is_set():
            complete.set()
        elif client.closed:
            complete.set()

    client.on_change = check
    check()
    await complete.wait()
    if client.closed:
        raise RuntimeError(f"the connection ended: {client.error!r}")
    return client, time.perf_counter() - start


async def open_notebook(server: Server, target: Target, root: Path, params: Params) -> list[Figure]:
    """Open a big notebook: cold (the room is not open) and warm; then the server's memory."""
    notebook = make_notebook(params.notebook_cells)
    path = "big.ipynb"
    nbformat.write(nbformat.from_dict(notebook), str(root / path))
    size = (root / path).stat().st_size
    detail = {"cells": params.notebook_cells, "file_mb": round(size / 1e6, 2)}
    cold = Figure("open", "cold", "s", "lower", detail=detail)
    warm = Figure("open", "warm", "s", "lower", detail=detail)
    memory = Figure("open", "server RSS after", "MB", "lower", detail=detail)
    clients: list[YClient] = []
    try:
        with anyio.fail_after(params.timeout):
            if target.file_backed:
                holder, cold.value = await _open_notebook(server, path, params.notebook_cells)
            else:
                cold.error = "n/a: the server has no files (a client fills the room)"
                doc = Doc()
                YNotebook(doc).set(notebook)
                holder, _ = await _open_notebook(server, path, params.notebook_cells, doc)
                # Wait until the server has all of it: a fresh client can read it back.
                probe, _ = await _open_notebook(server, path, params.notebook_cells)
                await probe.close()
            clients.append(holder)
            times = []
            for _ in range(params.warm_opens):
                client, seconds = await _open_notebook(server, path, params.notebook_cells)
                times.append(seconds)
                await client.close()
            warm.value = statistics.median(times)
            await asyncio.sleep(1)
            memory.value = rss_mb(server.pid)
    except Exception as exc:
        for figure in (cold, warm, memory):
            if figure.value is None:
                figure.error = figure.error or describe(exc, params)
    finally:
        await close_clients(clients)
    return [cold, warm, memory]


async def rooms(server: Server, target: Target, root: Path, params: Params) -> list[Figure]:
    """Open many small rooms, one client each; the server's memory per room."""
    warmup = max(1, params.rooms // 100)
    detail = {"rooms": params.rooms}
    per_room = Figure("rooms", f"RSS per room ({params.rooms} rooms)", "kB", "lower", detail=detail)
    total = Figure("rooms", f"RSS with {params.rooms} rooms", "MB", "lower", detail=detail)
    clients: list[YClient] = []
    directory = root / "rooms"
    directory.mkdir()
    for index in range(params.rooms):
        (directory / f"room-{index}.txt").write_text(f"room {index}\n")

    async def open_room(index: int) -> YClient:
        client = (await open_clients(server, f"rooms/room-{index}.txt", "text", 1))[0]
        text = client.doc.get("source", type=Text)
        if not target.file_backed:
            text += f"room {index}\n"
        return client

    async def open_range(start: int, stop: int) -> None:
        for first in range(start, stop, CONNECT_CONCURRENCY):
            last = min(first + CONNECT_CONCURRENCY, stop)
            clients.extend(await asyncio.gather(*(open_room(i) for i in range(first, last))))

    try:
        with anyio.fail_after(params.timeout):
            # Open a few rooms first, so that what every room needs once is counted apart.
            await open_range(0, warmup)
            await asyncio.sleep(1)
            before = rss_mb(server.pid)
            await open_range(warmup, params.rooms)
            await asyncio.sleep(1)
            after = rss_mb(server.pid)
        per_room.value = (after - before) * 1000 / (params.rooms - warmup)
        total.value = after
    except Exception as exc:
        per_room.error = total.error = describe(exc, params)
    finally:
        await close_clients(clients)
    return [per_room, total]


def describe(exc: BaseException, params: Params) -> str:
    """A short account of why a figure is missing."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {params.timeout:.0f} s"
    return f"{type(exc).__name__}: {exc}"


Scenario = Callable[[Server, Target, Path, Params], Awaitable[list[Figure]]]

SCENARIOS: dict[str, Scenario] = {
    "latency": latency,
    "burst": burst,
    "open": open_notebook,
    "rooms": rooms,
}
