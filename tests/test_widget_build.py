"""The widget's JavaScript that ships in the package is what its source builds to."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "jupyter_rooms" / "static" / "widget.js"


def test_the_shipped_widget_is_built_from_its_source(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        message = "rebuilding the widget needs Node.js and npm"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    js = tmp_path / "js"
    shutil.copytree(ROOT / "js", js, ignore=shutil.ignore_patterns("node_modules"))
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=js,
        check=True,
        timeout=120,
    )
    built = tmp_path / "widget.js"
    subprocess.run([npm, "run", "--silent", "build", "--", str(built)], cwd=js, check=True)
    assert built.read_bytes() == SHIPPED.read_bytes(), (
        "jupyter_rooms/static/widget.js is not what js/ builds to; "
        "rebuild it with: cd js && npm ci && npm run build"
    )
