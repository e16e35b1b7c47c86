"""The benchmark runs end to end and reports well-formed figures (nothing about speed)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    command = ["bench/run.py", "--quick", "--json", str(out), "--cache", str(tmp_path / "cache")]
    result = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
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
