"""JupyterLab's collaborative front end in headless Chromium, on jupyter_rooms and on
jupyter-collaboration's own server.

The page is the same on both (``jupyter-docprovider`` and ``jupyter-collaboration-ui``,
the front end jupyter-collaboration ships); only the server behind
``api/collaboration/...`` differs. For each server, on a fresh root::

    python bench/browser.py                         # both servers, 2,000 cells
    python bench/browser.py --cells 500 --edits 10 --targets jupyter_rooms

it measures:

- opening a notebook of ``--cells`` cells from the running page (``docmanager:open``):
  until the page's shared model holds every cell and its first cells are on screen (the
  page renders in the same turn as the sync completes, so the two are not told apart
  there); and the server's share of it, measured apart: a Python client's session and
  sync of a copy of the notebook (a cold room too), until it has every cell, and the
  same for the notebook the page has open (a warm room: open, with a client);
- edit latency from Python to the page: a client of the same room (``yclient.py``, the
  benchmark's neutral client) edits the first cell; the time until the page's editor
  shows it (median and 90th percentile);
- the server process's resident memory with the notebook open.

jupyter-collaboration is installed on first use in ``bench/.cache`` (as ``run.py`` does);
jupyter_rooms runs from this environment, which needs ``jupyterlab``,
``jupyter-docprovider`` and ``jupyter-collaboration-ui`` (the ``test`` extra has them).
Chromium is expected at ``/usr/bin/chromium``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
from playwright.async_api import async_playwright
from pycrdt import Array, Map, Text
from targets import JupyterCollaboration, Unavailable, free_port
from tornado.httpclient import AsyncHTTPClient
from yclient import YClient

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Polled in the page: when the opened notebook's shared model holds every cell, and when
# its first cell is on screen (milliseconds from the start of the open).
OPEN_NOTEBOOK = """async ([path, cells]) => {
    const started = performance.now();
    const result = {};
    jupyterapp.commands.execute('docmanager:open', {path});
    await new Promise((resolve) => {
        const check = () => {
            let widget = null;
            for (const w of jupyterapp.shell.widgets('main')) {
                if (w.context && w.context.path === path) widget = w;
            }
            const model = widget && widget.context.model;
            if (result.model === undefined && model && model.sharedModel.cells.length === cells) {
                result.model = performance.now() - started;
            }
            const line = widget && widget.node.querySelector('.jp-Cell .cm-line');
            if (result.model !== undefined && line && line.textContent.includes('cell 0')) {
                result.rendered = performance.now() - started;
                resolve();
            } else {
                setTimeout(check, 2);
            }
        };
        check();
    });
    return result;
}"""

# Resolves with the time (Date.now()) an editor line of the page shows the marker.
WATCH = """(marker) => {
    window.benchSeen = new Promise((resolve) => {
        const check = () => {
            const lines = document.querySelectorAll('.jp-Cell .cm-line');
            if ([...lines].some((l) => l.textContent.includes(marker))) resolve(Date.now());
            else setTimeout(check, 1);
        };
        check();
    });
}"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def notebook(cells: int) -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "cells": [
            {
                "cell_type": "code",
                "id": f"cell-{i}",
                "metadata": {},
                "source": f"# cell {i}\nx_{i} = {i} * 2\nprint(x_{i})",
                "execution_count": i + 1,
                "outputs": [{"output_type": "stream", "name": "stdout", "text": f"{i * 2}\n"}],
            }
            for i in range(cells)
        ],
    }


def rooms_python() -> str:
    """This environment's interpreter, if it has what jupyter_rooms' target needs."""
    wanted = ("jupyter_rooms", "jupyterlab", "jupyter_docprovider", "jupyter_collaboration_ui")
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if missing:
        raise Unavailable(f"this environment lacks {', '.join(missing)}: pip install -e '.[test]'")
    return sys.executable


def collaboration_python(cache: Path) -> str:
    """jupyter-collaboration's interpreter, installed in the cache on first use."""
    target = JupyterCollaboration()
    target.setup(cache)
    python = target.python
    check = subprocess.run([python, "-c", "import jupyterlab"], capture_output=True)
    if check.returncode != 0:
        subprocess.run([python, "-m", "pip", "install", "-q", "jupyterlab"], check=True)
    return python


def _spawn(
    command: list[str], env: dict[str, str], logfile: Any, cwd: Path
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=logfile, stderr=subprocess.STDOUT, cwd=cwd)


@asynccontextmanager
async def jupyterlab(python: str, root: Path) -> AsyncIterator[tuple[str, str, int]]:
    """Run ``jupyter lab`` of an interpreter on ``root``; yields its URL, token and pid."""
    home = root.parent / "jupyter"
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    config = home / "config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "LabApp": {
                    "news_url": None,
                    "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
                }
            }
        )
    )
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
    }
    port, token = free_port(), secrets.token_hex(16)
    logfile = (root.parent / "server.log").open("w")
    process = _spawn(
        [
            python,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={token}",
            "--LabApp.expose_app_in_browser=True",
        ],
        env,
        logfile,
        # jupyter-collaboration keeps its store in the current directory.
        root.parent,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                await AsyncHTTPClient().fetch(f"{url}/api/status?token={token}")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter lab did not start: see {logfile.name}") from None
                await asyncio.sleep(0.2)
            except Exception:
                await asyncio.sleep(0.2)
        yield url, token, process.pid
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        logfile.close()


async def room_url(url: str, token: str, path: str) -> str:
    """The collaboration room of a notebook, as the page reaches it."""
    body = json.dumps({"format": "json", "type": "notebook"})
    response = await AsyncHTTPClient().fetch(
        f"{url}/api/collaboration/session/{quote(path, safe='')}?token={token}",
        method="PUT",
        body=body,
    )
    session = json.loads(response.body)
    room = f"json:notebook:{session['fileId']}"
    ws = url.replace("http", "ws", 1)
    return f"{ws}/api/collaboration/room/{room}?sessionId={session['sessionId']}&token={token}"


async def open_room(url: str, token: str, path: str, cells: int) -> tuple[YClient, float]:
    """A Python client's session and sync of a notebook: the client, and the milliseconds
    until it has every cell (a server may answer the sync before it has loaded them)."""
    started = time.perf_counter()
    client = await YClient.open(await room_url(url, token, path))
    array = client.doc.get("cells", type=Array)
    complete = asyncio.Event()

    def check() -> None:
        if (client.synced.is_set() and len(array) >= cells) or client.closed:
            complete.set()

    client.on_change = check
    check()
    await asyncio.wait_for(complete.wait(), 120)
    if client.closed:
        raise RuntimeError(f"the connection to {path} ended: {client.error!r}")
    client.on_change = None
    return client, (time.perf_counter() - started) * 1000


async def measure(name: str, python: str, cells: int, edits: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-browser-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        (root / "big.ipynb").write_text(json.dumps(notebook(cells)))
        # The same notebook under another name, for the server alone (a cold room too).
        (root / "copy.ipynb").write_text(json.dumps(notebook(cells)))
        async with jupyterlab(python, root) as (url, token, pid), async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            await page.goto(f"{url}/lab?token={token}")
            await page.wait_for_function(
                "() => window.jupyterapp && jupyterapp.shell.widgets", timeout=120_000
            )
            await page.locator(".jp-Launcher").first.wait_for(timeout=120_000)
            log(f"[{name}] the server alone: session and first sync of a Python client")
            alone, server_alone = await open_room(url, token, "copy.ipynb", cells)
            await alone.close()

            log(f"[{name}] opening a notebook of {cells} cells")
            opened = await page.evaluate(OPEN_NOTEBOOK, ["big.ipynb", cells])
            rss = psutil.Process(pid).memory_info().rss

            log(f"[{name}] {edits} edits from Python")
            # The server's share of opening a notebook someone has open (a warm room).
            client, server_warm = await open_room(url, token, "big.ipynb", cells)
            source = client.doc.get("cells", type=Array)[0]
            assert isinstance(source, Map)
            text = source["source"]
            assert isinstance(text, Text)
            latencies = []
            for i in range(edits):
                marker = f"edit-{i}-{secrets.token_hex(3)}"
                await page.evaluate(WATCH, marker)
                sent = time.time() * 1000
                text.insert(0, marker + " ")
                seen = await page.evaluate("window.benchSeen")
                latencies.append(seen - sent)
                await asyncio.sleep(0.05)
            await client.close()
            await browser.close()
    latencies.sort()
    return {
        "target": name,
        "cells": cells,
        "open_page_ms": round(opened["rendered"]),
        "open_server_ms": round(server_alone),
        "open_server_warm_ms": round(server_warm),
        "edit_median_ms": round(statistics.median(latencies), 1),
        "edit_p90_ms": round(latencies[int(0.9 * (len(latencies) - 1))], 1),
        "server_rss_mb": round(rss / 2**20),
    }


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        ("open in the page: every cell in its model, first cells on screen", "open_page_ms", "ms"),
        ("  the server's share, cold: session + sync, Python client", "open_server_ms", "ms"),
        ("  the same, warm: the page has the notebook open", "open_server_warm_ms", "ms"),
        ("edit Python -> page, median", "edit_median_ms", "ms"),
        ("edit Python -> page, p90", "edit_p90_ms", "ms"),
        ("server memory (RSS)", "server_rss_mb", "MB"),
    ]
    names = [result["target"] for result in results]
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key, unit in rows:
        cells = " | ".join(f"{result[key]} {unit}" for result in results)
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--targets", default="jupyter_rooms,jupyter-collaboration")
    parser.add_argument("--cache", type=Path, default=HERE / ".cache")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if not shutil.which(CHROMIUM):
        sys.exit(f"Chromium is needed at {CHROMIUM}")
    results = []
    for name in args.targets.split(","):
        try:
            python = rooms_python() if name == "jupyter_rooms" else collaboration_python(args.cache)
        except Unavailable as exc:
            log(f"[{name}] skipped: {exc}")
            continue
        results.append(await measure(name, python, args.cells, args.edits))
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
