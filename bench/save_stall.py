"""Edits while a large notebook is saved: how long a save holds up every client.

Both servers save a notebook through Jupyter's contents manager a second after its last
change. For each server, on a fresh root with the benchmark's 2,000-cell notebook (10 MB)::

    python bench/save_stall.py                      # both servers
    python bench/save_stall.py --targets jupyter_rooms --rounds 2 --cells 500

two Python clients (``yclient.py``) join the notebook's room through the collaboration
endpoints; one edits the first cell every 50 ms and each edit is timed until the other
client has it (a round trip through the server). A round is 2 s of edits, a pause of
1.3 s (the server starts saving) and 3 s of edits while it saves. Reported: the median,
99th percentile and longest of those times, and how many saves the file's modification
time showed. A save that holds the server's event loop shows as the longest edit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pycrdt import Array, Map, Text
from scenarios import percentile
from targets import Unavailable
from yclient import YClient

from browser import collaboration_python, jupyterlab, open_room, rooms_python, write_notebook

HERE = Path(__file__).resolve().parent
INTERVAL = 0.05


def first_source(client: Any) -> Text:
    cell = client.doc.get("cells", type=Array)[0]
    assert isinstance(cell, Map)
    source = cell["source"]
    assert isinstance(source, Text)
    return source


def _modified(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


async def watch_saves(path: Path, saves: list[float]) -> None:
    """Record when the file's modification time changes, once per save (a save writes
    the file in several steps)."""
    last = _modified(path)
    while True:
        await asyncio.sleep(0.01)
        now = _modified(path)
        if now is not None and now != last:
            last = now
            if not saves or time.monotonic() - saves[-1] > 0.5:
                saves.append(time.monotonic())


async def edit(writer: YClient, reader: YClient, count: int, latencies: list[float]) -> None:
    arrived = asyncio.Event()
    reader.on_change = arrived.set
    try:
        for _ in range(count):
            marker = f"e{len(latencies)}."
            sent = time.monotonic()
            first_source(writer).insert(0, marker)
            while not str(first_source(reader)).startswith(marker):
                await arrived.wait()
                arrived.clear()
            latencies.append((time.monotonic() - sent) * 1000)
            await asyncio.sleep(INTERVAL)
    finally:
        reader.on_change = None


async def measure(name: str, python: str, cells: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-save-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        notebook = root / "big.ipynb"
        write_notebook(notebook, cells)
        async with jupyterlab(python, root) as (url, token, _pid):
            writer, _ = await open_room(url, token, "big.ipynb", cells)
            reader, _ = await open_room(url, token, "big.ipynb", cells)
            latencies: list[float] = []
            saves: list[float] = []
            watcher = asyncio.ensure_future(watch_saves(notebook, saves))
            try:
                for i in range(rounds):
                    print(f"[{name}] round {i + 1} of {rounds}", file=sys.stderr, flush=True)
                    await edit(writer, reader, 40, latencies)
                    await asyncio.sleep(1.3)
                    await edit(writer, reader, 60, latencies)
            finally:
                watcher.cancel()
                await writer.close()
                await reader.close()
    return {
        "target": name,
        "cells": cells,
        "edits": len(latencies),
        "median_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "longest_ms": round(max(latencies), 1),
        "saves": len(saves),
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="jupyter_rooms,jupyter-collaboration")
    parser.add_argument("--cells", type=int, default=2000, help="the notebook's size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=HERE / ".cache")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    results = []
    for name in args.targets.split(","):
        try:
            python = rooms_python() if name == "jupyter_rooms" else collaboration_python(args.cache)
        except Unavailable as exc:
            print(f"[{name}] skipped: {exc}", file=sys.stderr)
            continue
        results.append(await measure(name, python, args.cells, args.rounds))
    print("| | " + " | ".join(r["target"] for r in results) + " |")
    print("|---" * (len(results) + 1) + "|")
    for label, key, unit in [
        ("edit round trip, median", "median_ms", " ms"),
        ("edit round trip, p99", "p99_ms", " ms"),
        ("longest edit round trip", "longest_ms", " ms"),
        ("saves seen", "saves", ""),
    ]:
        print(f"| {label} | " + " | ".join(f"{r[key]}{unit}" for r in results) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
