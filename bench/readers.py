"""Readers in processes of their own, so that a server benchmark does not measure them.

A burst sends every reader thousands of messages; readers sharing the writer's process
(and event loop) would take turns with it and with each other, and the time until they
have converged would be theirs more than the server's. Here the readers are spread over
a few worker processes, each running this file with its own event loop; the benchmark's
process keeps the writer and talks to the workers over their standard input and output,
one JSON object a line:

- ``{"op": "open", "rooms": [[url, headers], ...]}``: connect a reader (a ``YClient``) to
  each, wait until all have synced; answers ``{"ok": count}``.
- ``{"op": "expect", "length": n}``: answers ``{"ok": 0}`` at once, then, once every
  reader's ``source`` text has ``n`` characters, ``{"at": t, "sha256": [...],
  "received": [...], "cpu_s": c}``: ``t`` the monotonic clock (the system-wide
  ``CLOCK_MONOTONIC`` on Linux, the same in every process) when the last one got there,
  a digest of each reader's text, the messages each received, the process's CPU seconds
  while waiting. ``{"error": ...}`` if a reader's connection ended.
- ``{"op": "close"}``: close the readers; answers ``{"ok": 0}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text
from yclient import YClient

HERE = Path(__file__).resolve().parent
# How many connections a worker opens at once.
CONNECT_CONCURRENCY = 25


class _Worker:
    """The readers of one worker process."""

    def __init__(self) -> None:
        self.clients: list[YClient] = []

    async def open(self, rooms: Sequence[tuple[str, dict[str, str]]]) -> int:
        semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(url: str, headers: dict[str, str]) -> YClient:
            async with semaphore:
                client = await YClient.open(url, headers=headers, doc=Doc())
                await client.synced.wait()
                return client

        self.clients += await asyncio.gather(*(one(url, headers) for url, headers in rooms))
        return len(self.clients)

    async def expect(self, length: int) -> dict[str, Any]:
        texts = [client.doc.get("source", type=Text) for client in self.clients]
        pending = set(range(len(texts)))
        done = asyncio.get_running_loop().create_future()
        cpu = time.process_time()
        last = time.monotonic()

        def check(index: int) -> None:
            nonlocal last
            if index not in pending or done.done():
                return
            if len(texts[index]) >= length:
                pending.discard(index)
                if not pending:
                    last = time.monotonic()
                    done.set_result(None)
            elif self.clients[index].closed:
                error = self.clients[index].error
                done.set_exception(ConnectionError(f"a reader's connection ended: {error!r}"))

        for index, client in enumerate(self.clients):
            client.on_change = lambda index=index: check(index)
        for index in range(len(texts)):
            check(index)
        try:
            await done
        finally:
            for client in self.clients:
                client.on_change = None
        return {
            "at": last,
            "sha256": [hashlib.sha256(str(text).encode()).hexdigest() for text in texts],
            "received": [client.received for client in self.clients],
            "cpu_s": time.process_time() - cpu,
        }

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in self.clients))
        self.clients = []


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = _Worker()
    tasks: set[asyncio.Task[None]] = set()

    def answer(reply: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()

    async def run(command: dict[str, Any]) -> None:
        try:
            if command["op"] == "open":
                answer({"ok": await worker.open(command["rooms"])})
            elif command["op"] == "expect":
                answer({"ok": 0})
                answer(await worker.expect(command["length"]))
            elif command["op"] == "close":
                await worker.close()
                answer({"ok": 0})
        except Exception as exc:
            answer({"error": f"{type(exc).__name__}: {exc}"})

    while line := await reader.readline():
        # Commands run as tasks: the worker keeps reading while it waits for readers.
        task = asyncio.ensure_future(run(json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await worker.close()


class ReaderPool:
    """Readers spread over worker processes; use ``async with ReaderPool(processes)``.

    Args:
        processes: How many worker processes (at most one per reader is started).
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._workers: list[asyncio.subprocess.Process] = []
        self._counts: list[int] = []

    async def __aenter__(self) -> ReaderPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _start(self, count: int) -> None:
        while len(self._workers) < count:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(HERE / "readers.py"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=64 * 1024 * 1024,
            )
            self._workers.append(process)
            self._counts.append(0)

    async def _ask(self, worker: asyncio.subprocess.Process, command: dict[str, Any]) -> Any:
        assert worker.stdin is not None
        worker.stdin.write((json.dumps(command) + "\n").encode())
        await worker.stdin.drain()
        return await self._answer(worker)

    @staticmethod
    async def _answer(worker: asyncio.subprocess.Process) -> Any:
        assert worker.stdout is not None
        line = await worker.stdout.readline()
        if not line:
            raise RuntimeError(f"a reader process exited (code {await worker.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    async def open(self, rooms: Sequence[tuple[str, dict[str, str]]]) -> None:
        """Connect one reader to each room (URL and headers), spread over the workers,
        and wait until every one has synced."""
        await self._start(min(self.processes, len(rooms)))
        shares: list[list[tuple[str, dict[str, str]]]] = [[] for _ in self._workers]
        for index, room in enumerate(rooms):
            shares[index % len(shares)].append(room)
        await asyncio.gather(
            *(
                self._ask(worker, {"op": "open", "rooms": share})
                for worker, share in zip(self._workers, shares, strict=True)
                if share
            )
        )
        for index, share in enumerate(shares):
            self._counts[index] += len(share)

    async def expect(self, length: int) -> asyncio.Future[dict[str, Any]]:
        """Start waiting for every reader to have ``length`` characters of ``source``.

        Returns (once every worker is watching) a future of: ``at``, the monotonic time
        when the last reader got there; ``sha256``, each reader's text's digest;
        ``received``, the messages each reader received; ``cpu_s``, the workers' CPU
        seconds meanwhile.
        """
        workers = [w for w, count in zip(self._workers, self._counts, strict=True) if count]
        await asyncio.gather(*(self._ask(w, {"op": "expect", "length": length}) for w in workers))

        async def converged() -> dict[str, Any]:
            replies = await asyncio.gather(*(self._answer(w) for w in workers))
            return {
                "at": max(reply["at"] for reply in replies),
                "sha256": [digest for reply in replies for digest in reply["sha256"]],
                "received": [count for reply in replies for count in reply["received"]],
                "cpu_s": sum(reply["cpu_s"] for reply in replies),
            }

        return asyncio.ensure_future(converged())

    async def close(self) -> None:
        """Close every reader (the workers stay, for more)."""
        workers = [w for w, count in zip(self._workers, self._counts, strict=True) if count]
        await asyncio.gather(*(self._ask(w, {"op": "close"}) for w in workers))
        self._counts = [0] * len(self._workers)

    async def stop(self) -> None:
        """Stop the workers (their readers close as they exit)."""
        for worker in self._workers:
            if worker.stdin is not None:
                worker.stdin.close()
        for worker in self._workers:
            try:
                await asyncio.wait_for(worker.wait(), 10)
            except asyncio.TimeoutError:
                worker.kill()
                await worker.wait()
        self._workers = []
        self._counts = []


if __name__ == "__main__":
    asyncio.run(_serve())
