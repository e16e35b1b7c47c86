"""The server extension under pytest-jupyter's fixtures (pytest_jupyter_suite.py), in a
pytest of its own: pytest-jupyter's plugin would take over this session's async tests."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_extension_passes_under_pytest_jupyters_fixtures(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "pytest_jupyter.jupyter_server",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--basetemp={tmp_path / 'pytest'}",
            "tests/pytest_jupyter_suite.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.search(r"(\d+) passed", output)
    assert passed is not None and int(passed.group(1)) >= 4, output
