"""Short randomized fault runs, one per wire (a longer one: see tests/faults.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faults import run

pytestmark = pytest.mark.anyio

SEED = int(os.environ.get("FAULTS_SEED", "1"))


@pytest.mark.parametrize("wire", ["websocket", "jupyter", "redis"])
async def test_nothing_is_lost_or_duplicated_under_faults(tmp_path: Path, wire: str) -> None:
    report = await run(seconds=20, seed=SEED, store=tmp_path, wire=wire)
    print(report)
    assert report.edits > 300
    assert report.faults["kill"] > 0 and report.faults["restart"] > 0
    assert report.checked_after_restarts > 0
    if wire != "websocket":
        assert report.outside_edits > 0
    if wire == "redis":
        assert report.faults["redis"] > 0


async def test_large_sync_replies_survive_faults(tmp_path: Path) -> None:
    # The free-form room holds 2.5 MB besides the edits: every reconnection's sync reply
    # is written in fragments, which cuts, stalls, restarts and kills meet half-written.
    report = await run(seconds=15, seed=SEED, store=tmp_path, wire="websocket", ballast=2_500_000)
    print(report)
    assert report.edits > 200
    assert report.faults["cut"] > 0 and report.faults["kill"] > 0
    assert report.checked_after_restarts > 0
