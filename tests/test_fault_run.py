"""A short randomized fault run (a longer one: python tests/faults.py --seconds 300)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faults import run

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("seed", [int(os.environ.get("FAULTS_SEED", "1"))])
async def test_nothing_is_lost_or_duplicated_under_faults(tmp_path: Path, seed: int) -> None:
    report = await run(seconds=15, seed=seed, store=tmp_path)
    print(report)
    assert report.edits > 100
    assert report.faults["kill"] + report.faults["restart"] > 0
