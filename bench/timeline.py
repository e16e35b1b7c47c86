"""The document timeline of a large notebook: what the server does when a page opens it
and steps through it.

A room's log is written as a room writes it: the benchmark's notebook (``--cells``
code cells with outputs, as ``run.py``'s open scenario writes it) as the first record,
then ``--edits`` one-character edits to the cells' sources, stamped with their time in
``--steps`` seconds. Then, as ``GET api/collaboration/timeline`` does, the log is read
and replayed into a fork, and the fork is moved as the page's slider does::

    python bench/timeline.py
    python bench/timeline.py --cells 500 --edits 200 --steps 20 --runs 3

Reported (the median of ``--runs``, in a process of its own): reading the log, building
the fork, one step back, going back to the oldest step and forward again to the newest,
and the size of what restoring the middle step would apply to the room.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
from pycrdt import Array, Doc, Map, Text
from scenarios import make_notebook

from jupyter_rooms.jupyter.documents import kind_named
from jupyter_rooms.jupyter.timeline import build_fork
from jupyter_rooms.updatelog import UpdateLog


def write_log(path: Path, cells: int, edits: int, steps: int) -> None:
    """A room's log: the notebook, then the edits, ``edits // steps`` a second."""
    kind = kind_named("notebook")
    content = kind.from_file(nbformat.writes(nbformat.from_dict(make_notebook(cells))).encode())
    assert content is not None
    doc: Doc = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    with doc.transaction():
        for _ in kind.fill(doc, content):
            pass
    log = UpdateLog(path)
    start = 1_700_000_000.0
    log.rewrite(updates.pop(), {"epoch": "bench", "kind": "notebook"}, time=start)
    ycells = doc.get("cells", type=Array)
    per_step = max(edits // max(steps, 1), 1)
    for index in range(edits):
        cell = ycells[index % len(ycells)]
        assert isinstance(cell, Map)
        source = cell["source"]
        assert isinstance(source, Text)
        source.insert(0, "#")
        stamp = start + 1 + index // per_step if index % per_step == 0 else None
        log.append([updates.pop()], time=stamp)
    log.close()


def measure(path: Path) -> dict[str, Any]:
    started = time.perf_counter()
    history = UpdateLog(path).load()
    loaded = time.perf_counter()
    fork = build_fork("bench", "bench.ipynb", "bench", kind_named("notebook"), history)
    built = time.perf_counter()
    fork.move(-1)
    one = time.perf_counter()
    # What restoring the middle step would apply to the room (at the newest step).
    room: Doc = Doc()
    for update in history.updates:
        room.apply_update(update)
    fork.move(-(len(fork.times) // 2) + 1)
    restore = fork.doc.get_update(room.get_state())
    back = time.perf_counter()
    fork.move(-len(fork.times))
    oldest = time.perf_counter()
    fork.move(len(fork.times))
    newest = time.perf_counter()
    return {
        "updates": len(history.updates),
        "steps": len(fork.times),
        "log_bytes": path.stat().st_size,
        "read_ms": (loaded - started) * 1000,
        "build_ms": (built - loaded) * 1000,
        "one_step_ms": (one - built) * 1000,
        "to_oldest_ms": (oldest - back) * 1000,
        "to_newest_ms": (newest - oldest) * 1000,
        "restore_middle_bytes": len(restore),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=2000, help="the notebook's size")
    parser.add_argument("--edits", type=int, default=1000, help="edits after it was opened")
    parser.add_argument("--steps", type=int, default=100, help="seconds the edits take")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bench.ipynb.ylog"
        write_log(path, args.cells, args.edits, args.steps)
        runs = [measure(path) for _ in range(args.runs)]
    figures: dict[str, Any] = {"cells": args.cells, "edits": args.edits}
    for key in runs[0]:
        values = [run[key] for run in runs]
        figures[key] = statistics.median(values) if key.endswith("_ms") else values[0]
    print(f"| timeline of {args.cells} cells, {args.edits} edits | |")
    print("|---|---|")
    print(
        f"| log read: {figures['log_bytes'] / 1e6:.1f} MB, {figures['updates']} updates | "
        f"{figures['read_ms']:.1f} ms |"
    )
    print(f"| fork built: {figures['steps']} steps | {figures['build_ms']:.1f} ms |")
    print(f"| one step back | {figures['one_step_ms']:.2f} ms |")
    print(f"| back to the oldest step | {figures['to_oldest_ms']:.1f} ms |")
    print(f"| forward to the newest | {figures['to_newest_ms']:.1f} ms |")
    print(f"| restoring the middle step applies | {figures['restore_middle_bytes']:,} bytes |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
