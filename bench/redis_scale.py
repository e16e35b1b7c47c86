"""How rooms shared through Redis scale: latency, bursts, Redis's CPU and memory.

Runs a real redis-server and standalone jupyter_rooms websocket servers
(``python -m jupyter_rooms``), each in its own process on 127.0.0.1, and drives them
with the benchmark's raw y-websocket client (``yclient.py``: one message per change, as
Yjs's ``WebsocketProvider`` sends them), all in this process:

- **latency**: one room, six clients spread over the servers (the writer on the first);
  the writer appends one character, and the figure is the time until the last of the
  other five has it (p50 and p95 over 100 edits, after 5 unmeasured).
- **burst**: the writer, on the first server, appends 3,000 characters as fast as it
  can; two readers, on the last server, wait for all of them.
- **capacity**: many rooms at once on three servers (each room's writer and reader on
  different servers); Redis's CPU time per update relayed tells how many updates per
  second one Redis core carries.
- **memory**: Redis's ``used_memory`` per room, for the rooms of the capacity run and
  for one long-edited room before and after its stream is folded into a snapshot.

Each layout runs with its clients spread over one, two and three servers sharing one
Redis, and against one server without Redis. Run from the repository root:
``python bench/redis_scale.py [--json FILE]``; it takes under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from localjupyter import free_port
from pycrdt import Text
from yclient import YClient

LATENCY_CLIENTS = 6
LATENCY_EDITS = 100
LATENCY_WARMUP = 5
BURST_EDITS = 3000
BURST_RUNS = 3
CAPACITY_ROOMS = 500
CAPACITY_EDITS = 20
CAPACITY_ROUND_SECONDS = 0.25
LONG_ROOM_EDITS = 6000


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the process for port {port} exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


class Client:
    """A text room's client: the benchmark's raw client (``yclient.py``) and a way to
    wait for what it has."""

    def __init__(self, client: YClient) -> None:
        self.client = client
        self.text = client.doc.get("source", type=Text)
        self.changed = asyncio.Event()
        client.on_change = self.changed.set

    async def flush(self) -> None:
        await self.client.flushed()

    async def until(self, predicate: Callable[[], bool], timeout: float = 120) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.client.closed:
                    raise ConnectionError(f"the connection ended: {self.client.error}")
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        await self.client.close()


@contextmanager
def redis_server(directory: Path) -> Iterator[tuple[str, redis.Redis]]:
    """A redis-server as the README advises for production: append-only, fsync each second."""
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, process)
        client = redis.Redis(port=port)
        with_retry = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.BusyLoadingError:
                if time.monotonic() > with_retry:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", client
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def room_servers(count: int, redis_url: str | None) -> Iterator[list[int]]:
    """``count`` standalone websocket servers, sharing rooms through ``redis_url`` if given."""
    processes, ports = [], []
    try:
        for _ in range(count):
            port = free_port()
            command = [sys.executable, "-m", "jupyter_rooms", "--port", str(port)]
            command += ["--log-level", "WARNING"]
            if redis_url:
                command += ["--redis-url", redis_url]
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
            processes.append(process)
            ports.append(port)
        for port, process in zip(ports, processes, strict=True):
            wait_for_port(port, process)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


async def join(port: int, room: str) -> Client:
    client = await YClient.open(f"ws://127.0.0.1:{port}/{room}")
    async with asyncio.timeout(30):
        await client.synced.wait()
    return Client(client)


async def latency(ports: list[int], room: str) -> dict[str, float]:
    clients = [await join(ports[i % len(ports)], room) for i in range(LATENCY_CLIENTS)]
    writer, readers = clients[0], clients[1:]
    times = []
    for i in range(LATENCY_WARMUP + LATENCY_EDITS):
        start = time.perf_counter()
        writer.text += "x"
        await writer.flush()
        for reader in readers:
            await reader.until(lambda r=reader, n=i + 1: len(r.text) == n)
        if i >= LATENCY_WARMUP:
            times.append(time.perf_counter() - start)
    for client in clients:
        await client.close()
    times.sort()
    return {
        "p50_ms": round(statistics.median(times) * 1000, 3),
        "p95_ms": round(times[int(len(times) * 0.95)] * 1000, 3),
    }


async def burst(ports: list[int], room: str) -> dict[str, float]:
    """The median of a few bursts, each in a room of its own."""
    runs = [await one_burst(ports, f"{room}-{i}") for i in range(BURST_RUNS)]
    seconds = statistics.median(runs)
    return {"seconds": round(seconds, 3), "edits_per_s": round(BURST_EDITS / seconds)}


async def one_burst(ports: list[int], room: str) -> float:
    writer = await join(ports[0], room)
    readers = [await join(ports[-1], room) for _ in range(2)]
    start = time.perf_counter()
    for _ in range(BURST_EDITS):
        writer.text += "x"
    await writer.flush()
    for reader in readers:
        await reader.until(lambda r=reader: len(r.text) == BURST_EDITS)
    seconds = time.perf_counter() - start
    for client in [writer, *readers]:
        await client.close()
    return seconds


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def key_bytes(client: redis.Redis, pattern: str) -> dict[str, int]:
    """What Redis's ``MEMORY USAGE`` says the keys matching a pattern take, by kind."""
    sizes: dict[str, int] = {}
    for key in client.scan_iter(match=pattern, count=1000):
        kind = key.decode().rpartition(":")[2]
        sizes[kind] = sizes.get(kind, 0) + int(client.memory_usage(key, samples=0) or 0)
    return sizes


def command_calls(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Calls and microseconds of Redis CPU, by command."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
        for name, value in stats.items()
    }


async def capacity(ports: list[int], client: redis.Redis) -> dict[str, Any]:
    """Many rooms edited at once; what it costs Redis per update and per room."""
    memory_before = int(client.info("memory")["used_memory"])
    pairs = []
    for i in range(CAPACITY_ROOMS):
        room = f"capacity-{i}"
        writer = await join(ports[i % len(ports)], room)
        reader = await join(ports[(i + 1) % len(ports)], room)
        pairs.append((writer, reader))
    cpu_before, calls_before = redis_cpu(client), command_calls(client)
    start = time.perf_counter()
    # Every room's writer types one character every quarter of a second (a fast typist),
    # so that the servers' updates reach Redis one by one rather than merged.
    for _ in range(CAPACITY_EDITS):
        round_start = time.perf_counter()
        for writer, _reader in pairs:
            writer.text += "x"
        await asyncio.gather(*(writer.flush() for writer, _ in pairs))
        await asyncio.sleep(max(0.0, CAPACITY_ROUND_SECONDS - time.perf_counter() + round_start))
    for _writer, reader in pairs:
        await reader.until(lambda r=reader: len(r.text) == CAPACITY_EDITS)
    seconds = time.perf_counter() - start
    cpu = redis_cpu(client) - cpu_before
    calls_after = command_calls(client)
    calls = {
        name: {
            "calls": calls_after[name][0] - calls_before.get(name, (0, 0))[0],
            "cpu_us": calls_after[name][1] - calls_before.get(name, (0, 0))[1],
        }
        for name in ("xadd", "xread", "evalsha", "eval", "hgetall", "xrange", "xrevrange")
        if name in calls_after
    }
    updates = CAPACITY_ROOMS * CAPACITY_EDITS
    memory = int(client.info("memory")["used_memory"]) - memory_before
    keys = key_bytes(client, "jupyter_rooms:capacity-*")
    for writer, reader in pairs:
        await writer.close()
        await reader.close()
    entries = calls["xadd"]["calls"] if "xadd" in calls else 0
    return {
        "rooms": CAPACITY_ROOMS,
        "servers": len(ports),
        "updates": updates,
        "seconds": round(seconds, 2),
        "updates_per_s": round(updates / seconds),
        "stream_entries": entries,
        "redis_cpu_s": round(cpu, 3),
        "redis_cpu_us_per_entry": round(cpu / max(entries, 1) * 1e6, 1),
        "entries_per_redis_core_s": round(entries / cpu) if cpu > 0 else None,
        "redis_calls": calls,
        "used_memory_per_room_kb": round(memory / CAPACITY_ROOMS / 1024, 1),
        "key_bytes_per_room": {k: round(v / CAPACITY_ROOMS) for k, v in sorted(keys.items())},
    }


async def long_room(ports: list[int], client: redis.Redis) -> dict[str, Any]:
    """One room edited long enough for its stream to be folded into a snapshot."""
    writer = await join(ports[0], "long")
    reader = await join(ports[-1], "long")
    for i in range(LONG_ROOM_EDITS):
        writer.text += "x"
        if i % 5 == 4:
            # Edits as people make them, in many small messages (not merged by a backlog).
            await writer.flush()
            await asyncio.sleep(0.002)
    await writer.flush()
    await reader.until(lambda: len(reader.text) == LONG_ROOM_EDITS)
    entries = int(client.xlen("jupyter_rooms:long:updates"))
    before = key_bytes(client, "jupyter_rooms:long:*")
    # The saver folds the stream into a snapshot at its next look (every third of the
    # lock's 10 s); entries stay in the stream for a minute more, for lagging servers.
    for _ in range(100):
        if client.exists("jupyter_rooms:long:snapshot"):
            break
        await asyncio.sleep(0.1)
    snapshot = client.hget("jupyter_rooms:long:snapshot", "update") or b""
    after = key_bytes(client, "jupyter_rooms:long:*")
    await writer.close()
    await reader.close()
    return {
        "edits": LONG_ROOM_EDITS,
        "stream_entries": entries,
        "snapshot_bytes": len(snapshot),
        "document_bytes": len(writer.client.doc.get_update()),
        "key_bytes": before,
        "stream_bytes_per_entry": round(before.get("updates", 0) / max(entries, 1)),
        "key_bytes_after_snapshot": after,
    }


async def run(machine: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine, "layouts": {}}
    with tempfile.TemporaryDirectory() as directory, redis_server(Path(directory)) as (url, rc):
        layouts = [("alone", 1, None), ("redis, 1 server", 1, url)]
        layouts += [("redis, 2 servers", 2, url), ("redis, 3 servers", 3, url)]
        for name, count, redis_url in layouts:
            with room_servers(count, redis_url) as ports:
                slug = name.replace(" ", "").replace(",", "-")
                results["layouts"][name] = {
                    "latency": await latency(ports, f"latency-{slug}"),
                    "burst": await burst(ports, f"burst-{slug}"),
                }
                print(name, results["layouts"][name], flush=True)
        with room_servers(3, url) as ports:
            results["capacity"] = await capacity(ports, rc)
            print("capacity", results["capacity"], flush=True)
            results["long_room"] = await long_room(ports, rc)
            print("long room", results["long_room"], flush=True)
    results["machine"]["load_after"] = os.getloadavg()[0]
    results["machine"]["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis": version.stdout.split()[2],
        "load_before": os.getloadavg()[0],
    }
    results = asyncio.run(run(machine))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
