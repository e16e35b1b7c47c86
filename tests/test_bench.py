"""The benchmark runs end to end and reports well-formed figures (nothing about speed)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from browser import chromium_path

ROOT = Path(__file__).resolve().parent.parent


def run_bench(*command: str, out: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a benchmark script from the project's root, writing its figures to ``out``;
    it must succeed."""
    result = subprocess.run(
        [sys.executable, *command, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    return result


def test_quick_benchmark_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = run_bench(
        "bench/run.py", "--quick", "--cache", str(tmp_path / "cache"), out=out, timeout=120
    )
    results = json.loads(out.read_text())

    # The quick run needs no install: the peers are left out, not failed. The Jupyter
    # extension's target runs where the extension is part of the package.
    targets = results["targets"]
    assert set(targets) == {"jupyter_rooms", "jupyter_rooms-jupyter", "pycrdt"}
    assert "version" in targets["jupyter_rooms"] and "version" in targets["pycrdt"]
    ran = {name for name, target in targets.items() if "version" in target}
    assert results["quick"] is True
    assert results["machine"]["cpus"] >= 1

    by_target: dict[str, dict[tuple[str, str], dict]] = {}
    for figure in results["figures"]:
        by_target.setdefault(figure["target"], {})[(figure["scenario"], figure["metric"])] = figure
    assert set(by_target) == ran
    for name in ran - {"pycrdt"}:
        assert {scenario for scenario, _ in by_target[name]} == {
            "latency",
            "burst",
            "open",
            "rooms",
        }
    assert {scenario for scenario, _ in by_target["pycrdt"]} == {"burst"}
    for figures in by_target.values():
        for (scenario, metric), figure in figures.items():
            if figure["error"] and figure["error"].startswith("n/a"):
                # The standalone server has no files, so nothing to open cold.
                assert (scenario, metric) == ("open", "cold"), figure
                continue
            assert figure["error"] is None, figure
            value = figure["value"]
            assert isinstance(value, float) and math.isfinite(value), figure
            if figure["unit"] == "kB":
                # Memory per room is a difference of two readings, so it may be noise.
                continue
            if metric.startswith("server CPU"):
                # Counted in the system's clock ticks (10 ms): a tiny burst may take none.
                assert value >= 0, figure
                continue
            # Everything else is a duration, a rate or a size.
            assert value > 0, figure
    assert "| latency | p50, N=2 (ms) |" in result.stdout


def test_browser_benchmark_reports_every_figure(tmp_path: Path) -> None:
    # JupyterLab's front end in Chromium on a small notebook: every figure of the table,
    # the transfer alone included, is measured.
    chromium_path()
    out = tmp_path / "browser.json"
    result = run_bench(
        "bench/browser.py", "--cells", "40", "--edits", "3", "--targets", "jupyter_rooms", out=out
    )
    (figures,) = json.loads(out.read_text())
    assert figures["target"] == "jupyter_rooms" and figures["cells"] == 40
    measured = [
        "open_page_cold_ms",
        "open_page_cold_server_ms",
        "open_page_cold_session_ms",
        "open_page_cold_reply_ms",
        "open_page_warm_ms",
        "open_page_warm_server_ms",
        "open_page_warm_session_ms",
        "open_page_warm_reply_ms",
        "transfer_floor_ms",
        "open_server_cold_ms",
        "open_server_warm_ms",
        "open_server_reopened_ms",
        "edit_median_ms",
        "edit_p99_ms",
        "server_rss_mb",
    ]
    for key in measured:
        value = figures[key]
        assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)
        assert value >= 0, (key, value)
    # Every row of the table has a figure.
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(measured), table
    # The document's sync reply of 40 cells: tens of kB, which the bare socket sent whole.
    assert 0 < figures["document_mb"] < 1
    assert figures["transfer_floor_ms"] > 0
    assert "| the transfer alone" in result.stdout


def test_save_stall_benchmark_reports_every_figure(tmp_path: Path) -> None:
    # Edits timed through a server while it saves: each edit was timed, and the pause
    # of a round let the server save.
    out = tmp_path / "stall.json"
    result = run_bench(
        "bench/save_stall.py",
        "--cells",
        "40",
        "--rounds",
        "1",
        "--targets",
        "jupyter_rooms",
        out=out,
    )
    (figures,) = json.loads(out.read_text())
    assert (figures["target"], figures["cells"], figures["edits"]) == ("jupyter_rooms", 40, 100)
    assert figures["saves"] >= 1
    assert 0 < figures["median_ms"] <= figures["p99_ms"] <= figures["longest_ms"]
    assert "| longest edit round trip |" in result.stdout


def test_timeline_benchmark_reports_every_figure(tmp_path: Path) -> None:
    # A log of a notebook and its edits, replayed into a fork that steps back and forth.
    out = tmp_path / "timeline.json"
    run_bench(
        "bench/timeline.py",
        *("--cells", "20", "--edits", "30", "--steps", "10", "--runs", "2"),
        out=out,
    )
    figures = json.loads(out.read_text())
    # The notebook as first read, then a step per stamped second of edits.
    assert (figures["updates"], figures["steps"]) == (31, 11)
    assert figures["restore_middle_bytes"] > 0
    assert all(figures[key] >= 0 for key in figures if key.endswith("_ms"))


def test_large_write_benchmark_reports_every_figure(tmp_path: Path) -> None:
    # Each way of writing a large message, idle and beside a busy thread, delivered the
    # message whole into Chromium (the page checks its length) and was timed.
    chromium_path()
    out = tmp_path / "large.json"
    result = run_bench("bench/large_write.py", "--runs", "2", "--size", "5000000", out=out)
    figures = json.loads(out.read_text())
    ways = {"one frame", "jupyter_rooms", "256 KiB, header apart", "compressed"}
    assert {(f["way"], f["server"]) for f in figures} == {
        (way, server) for way in ways for server in ("idle", "a busy thread")
    }
    for figure in figures:
        assert (figure["runs"], figure["size"], figure["message"]) == (2, 5_000_000, "random")
        assert 0 < figure["median_ms"] <= figure["p90_ms"], figure
    assert len([line for line in result.stdout.splitlines() if line.startswith("| ")]) == 5
