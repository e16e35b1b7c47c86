"""A small run of the load test (bench/load.py): every edit reaches every other client
of its room, with no error. Its speed is reported, not judged."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.anyio


def _load_module() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / "load.py"
    spec = importlib.util.spec_from_file_location("load", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["load"] = module
    spec.loader.exec_module(module)
    return module


load = _load_module()


@pytest.mark.parametrize("wire", ["jupyter", "websocket"])
async def test_every_edit_reaches_the_room_without_errors(tmp_path: Path, wire: str) -> None:
    results = await load.run(wire, clients=12, rooms=3, seconds=3, rate=4, directory=tmp_path)
    print(results)
    assert results.edits > 100
    assert results.errors == 0, results.error_kinds
    assert results.deliveries == results.expected_deliveries == results.edits * 3


async def test_overwrites_converge_on_the_last_values(tmp_path: Path) -> None:
    results = await load.run(
        "jupyter", clients=12, rooms=3, seconds=3, rate=4, directory=tmp_path, edits="set"
    )
    print(results)
    assert results.edits > 100 and results.deliveries > 0
    assert results.errors == 0, results.error_kinds
