"""Benchmark jupyter_rooms against jupyter-collaboration (and Yjs's own server).

Every server runs in a process of its own on 127.0.0.1, with a fresh root directory for
each scenario; the same Python clients (``yclient.py``) do the same work on each::

    python bench/run.py                      # everything, a few minutes
    python bench/run.py --quick              # a tiny run of the servers needing no install
    python bench/run.py --targets jupyter_rooms,yjs --json results.json

The peers are installed on first use into the cache directory (``bench/.cache``):
jupyter-collaboration into a venv of its own, the Yjs server with npm. It prints a table
and, with ``--json``, writes every figure with the ratio to jupyter-collaboration's.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from scenarios import SCENARIOS, Figure, Params, floor
from targets import BASELINE, TARGETS, Floor, Target, Unavailable

HERE = Path(__file__).resolve().parent
QUICK_TARGETS = ("jupyter_rooms-jupyter", "jupyter_rooms", "pycrdt")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def profiling(pid: int, output: Path | None) -> Iterator[None]:
    """Sample a server with py-spy while the block runs, into collapsed stacks."""
    if output is None:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250"]
    profiler = subprocess.Popen(
        [*command, "--output", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield
    finally:
        profiler.send_signal(signal.SIGINT)
        try:
            profiler.wait(30)
        except subprocess.TimeoutExpired:
            profiler.kill()
            profiler.wait()
        log(f"profile written to {output}")


async def run_target(
    target: Target, scenarios: list[str], params: Params, profile: Path | None = None
) -> list[tuple[str, Figure]]:
    """Run the chosen scenarios on one target, each on a fresh server."""
    figures: list[tuple[str, Figure]] = []
    if isinstance(target, Floor):
        if "burst" in scenarios:
            log(f"[{target.name}] burst")
            figures += [(target.name, figure) for figure in floor(params)]
        return figures
    for name in scenarios:
        if name not in target.scenarios:
            continue
        log(f"[{target.name}] {name}")
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            root = Path(tmp) / "root"
            root.mkdir()
            try:
                async with target.serve(root) as server:
                    output = profile / f"{target.name}-{name}.txt" if profile else None
                    with profiling(server.pid, output):
                        found = await SCENARIOS[name](server, target, root, params)
            except Exception as exc:
                found = [Figure(name, "server", "", "lower", error=f"{type(exc).__name__}: {exc}")]
                tail = (Path(tmp) / "root.log").read_text(errors="replace")[-2000:]
                log(f"[{target.name}] {name} failed: {exc}\n{tail}")
        figures += [(target.name, figure) for figure in found]
        log(f"[{target.name}] {name} done in {time.perf_counter() - started:.1f} s")
    return figures


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Give each figure its ratio to the baseline's figure for the same metric."""
    baseline = {
        (row["scenario"], row["metric"]): row["value"]
        for row in rows
        if row["target"] == BASELINE and row["value"]
    }
    for row in rows:
        reference = baseline.get((row["scenario"], row["metric"]))
        row["ratio"] = row["value"] / reference if reference and row["value"] else None


def table(rows: list[dict[str, Any]], targets: list[str]) -> str:
    """The figures as a Markdown table: a row per metric, a column per target."""
    metrics: list[tuple[str, str, str]] = []
    cells: dict[tuple[str, str, str], str] = {}
    for row in rows:
        key = (row["scenario"], row["metric"], row["unit"])
        if key not in metrics:
            metrics.append(key)
        if row["value"] is None:
            text = "—" if row["error"] and row["error"].startswith("n/a") else "failed"
        else:
            text = _number(row["value"])
            if row["ratio"] is not None and row["target"] != BASELINE:
                text += f" ({row['ratio']:.2f}x)"
        cells[(row["target"], row["scenario"], row["metric"])] = text
    header = ["scenario", "figure", *targets]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scenario, metric, unit in metrics:
        label = f"{metric} ({unit})" if unit else metric
        values = [cells.get((target, scenario, metric), "") for target in targets]
        lines.append("| " + " | ".join([scenario, label, *values]) + " |")
    return "\n".join(lines)


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "system": platform.platform(),
        "python": platform.python_version(),
    }


def load_average() -> list[float]:
    """The machine's load over 1, 5 and 15 minutes: other work shows in the figures."""
    return [round(load, 2) for load in os.getloadavg()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes; by default only the targets that need no install",
    )
    parser.add_argument(
        "--targets",
        help=f"comma-separated, from: {', '.join(TARGETS)} (default: all, or "
        f"{', '.join(QUICK_TARGETS)} with --quick)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument(
        "--cache",
        type=Path,
        default=HERE / ".cache",
        help="where the peers are installed (default: bench/.cache)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample each server with py-spy (pip install py-spy) into this directory",
    )
    parser.add_argument(
        "--timeout", type=float, help="seconds allowed for each scenario on each target"
    )
    args = parser.parse_args(argv)
    names = (
        args.targets.split(",") if args.targets else list(QUICK_TARGETS if args.quick else TARGETS)
    )
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    args.targets = [name for name in TARGETS if name in names]
    args.scenarios = args.scenarios.split(",")
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    return args


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    params = Params.quick() if args.quick else Params()
    if args.timeout:
        params.timeout = args.timeout
    args.cache.mkdir(parents=True, exist_ok=True)
    load_at_start = load_average()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    targets: dict[str, dict[str, Any]] = {}
    figures: list[tuple[str, Figure]] = []
    for name in args.targets:
        target = TARGETS[name]()
        try:
            targets[name] = {"version": target.setup(args.cache)}
        except Unavailable as exc:
            log(f"[{name}] skipped: {exc}")
            targets[name] = {"skipped": str(exc)}
            continue
        figures += await run_target(target, args.scenarios, params, args.profile)
    rows = [
        {
            "target": target,
            "scenario": f.scenario,
            "metric": f.metric,
            "unit": f.unit,
            "better": f.better,
            "value": f.value,
            "error": f.error,
            "detail": f.detail,
        }
        for target, f in figures
    ]
    add_ratios(rows)
    ran = [name for name in args.targets if "version" in targets[name]]
    print(table(rows, ran))
    print(f"\nratios: figure / {BASELINE}'s figure.")
    for name, target in targets.items():
        if "skipped" in target:
            print(f"{name}: skipped: {target['skipped']}")
    for row in rows:
        if row["error"] and not row["error"].startswith("n/a"):
            print(f"{row['target']}: {row['scenario']} {row['metric']}: {row['error']}")
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "load_average": {"start": load_at_start, "end": load_average()},
        "quick": args.quick,
        "params": vars(params),
        "baseline": BASELINE,
        "targets": targets,
        "figures": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=list) + "\n")
    return results


if __name__ == "__main__":
    asyncio.run(main())
