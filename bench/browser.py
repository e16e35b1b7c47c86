"""JupyterLab's collaborative front end in headless Chromium, on jupyter_rooms and on
jupyter-collaboration's own server.

The page is the same on both (``jupyter-docprovider`` and ``jupyter-collaboration-ui``,
the front end jupyter-collaboration ships); only the server behind
``api/collaboration/...`` differs. For each server, on a fresh root::

    python bench/browser.py                         # both servers, 2,000 large cells
    python bench/browser.py --runs 10               # ten times each, in turn
    python bench/browser.py --cells 500 --edits 20 --targets jupyter_rooms

The notebook is the benchmark's large one (``scenarios.make_notebook``: code cells with a
stream and an image output each, about 5 kB a cell, 10 MB for 2,000 cells). It measures:

- opening it from the running page (``docmanager:open``), until the page's shared model
  holds every cell and its first cell is on screen (the page renders in the same turn as
  the sync completes, so the two are not told apart there):

  - *cold*: the room is not open (the server never opened the file); the server has
    served the page, which opened another (small) notebook first, so that what a server
    does once for the first notebook of all (JupyterLab's page asks for the exporters
    of ``nbconvert``, which the server imports then) is not counted;
  - *warm*: the room is open, a first page has the notebook open, and a second page
    (the same browser, its own workspace) opens it;

  and, for each, the server's share as Chromium's network stack times it (outside the
  page's main thread): the session request (``PUT api/collaboration/session/...``) from
  sending to its answer, plus the room's socket from its handshake until the message
  that completes the document arrived; the page's own work before, between and after
  the two is the rest. Of the socket's part, the time from the page's sync request
  (its first message) until the document was in is given apart: for a room that is
  open, the server answers at once, and what remains is the document's bytes reaching
  the page, which takes them only as fast as its busy main thread reads them;
- the transfer alone: a socket of the benchmark's own, in the second page before it
  opens the notebook, that answers the page's first message at once with as many bytes
  as the document's sync reply, timed as the server's share is (median of five): no
  server delivers the document to a page faster than this;
- the server's share measured without the page, by a Python client (``yclient.py``):
  session request, socket and sync until the message that completes the document is
  received (before the client applies it). Cold: a copy of the notebook no one opened
  yet; warm: the notebook the pages have open; reopened: the copy after a restart of the
  server on the same root (the room rebuilt from the history the server kept);
- edit latency from Python to the page: a client of the same room edits the first cell;
  the time until the first page's editor shows it (median and 99th percentile);
- the server process's resident memory once both pages have the notebook open.

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
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nbformat
import psutil
from localjupyter import CHROMIUM, CHROMIUM_ARGS, free_port, jupyter_command, lab_home
from playwright.async_api import async_playwright
from pycrdt import Array, Map, Text
from run import profiling
from scenarios import make_notebook, percentile
from targets import JupyterCollaboration, Unavailable
from tornado.httpclient import AsyncHTTPClient
from tornado.web import Application
from tornado.websocket import WebSocketHandler
from yclient import YClient

from jupyter_rooms.websocket import _frame_header

HERE = Path(__file__).resolve().parent

# Installed in every page before its scripts run: counts the messages each notebook
# room socket delivers to the page, and after the page's own handler has applied each,
# calls ``window.benchApplied`` (set while a notebook opens).
RECORD = """(() => {
    window.benchMessages = 0;
    const Native = window.WebSocket;
    class Counting extends Native {
        constructor(url, protocols) {
            super(url, protocols);
            if (String(url).includes('api/collaboration/room/json:notebook:')) {
                this.addEventListener('message', () => { window.benchMessages += 1; });
                // The page sets its handler (onmessage) once the socket is made: a
                // listener added after that runs after it.
                setTimeout(() => this.addEventListener('message', () => {
                    if (window.benchApplied) window.benchApplied();
                }), 0);
            }
        }
    }
    window.WebSocket = Counting;
})()"""

# Polled in the page: when the opened notebook's shared model holds every cell and when
# its first cell is on screen (milliseconds from the start of the open); and which room
# message made the model whole.
OPEN_NOTEBOOK = """async ([path, cells, marker]) => {
    window.benchMessages = 0;
    const started = performance.now();
    const result = {};
    const whole = () => {
        for (const w of jupyterapp.shell.widgets('main')) {
            const model = w.context && w.context.path === path && w.context.model;
            if (model && model.sharedModel.cells.length === cells) return true;
        }
        return false;
    };
    // The room message after which the page's model is whole (counted from the first).
    window.benchApplied = () => {
        if (result.messages === undefined && whole()) result.messages = window.benchMessages;
    };
    jupyterapp.commands.execute('docmanager:open', {path});
    await new Promise((resolve, reject) => {
        const check = () => {
            let widget = null;
            for (const w of jupyterapp.shell.widgets('main')) {
                if (w.context && w.context.path === path) widget = w;
            }
            const model = widget && widget.context.model;
            const now = performance.now();
            if (result.model === undefined && model && model.sharedModel.cells.length === cells) {
                result.model = now - started;
            }
            const line = widget && widget.node.querySelector('.jp-Cell .cm-line');
            if (result.model !== undefined && line && line.textContent.includes(marker)) {
                result.rendered = now - started;
                window.benchApplied = null;
                resolve();
            } else if (now - started > 60000) {
                // A server that failed to open it: say what the page shows.
                const dialogs = [...document.querySelectorAll('.jp-Dialog')];
                const shown = dialogs.map((d) => d.textContent).join(' | ') || 'no dialog';
                reject(new Error(`${path} did not open within 60 s (${shown})`));
            } else {
                setTimeout(check, 2);
            }
        };
        check();
    });
    return result;
}"""


class Network:
    """What Chromium's network stack saw of a page's session requests and notebook room
    sockets, with its own timestamps (seconds): when a request left and its answer was
    in, when a socket's handshake left and each of its messages arrived. These are taken
    outside the page's busy main thread, so they time the server, not the page."""

    def __init__(self) -> None:
        self.requests: dict[str, dict[str, float]] = {}
        self.sockets: dict[str, dict[str, Any]] = {}

    @classmethod
    async def attach(cls, page: Any) -> Network:
        network = cls()
        cdp = await page.context.new_cdp_session(page)
        cdp.on("Network.requestWillBeSent", network._request)
        cdp.on("Network.loadingFinished", network._finished)
        cdp.on("Network.webSocketCreated", network._socket)
        cdp.on("Network.webSocketWillSendHandshakeRequest", network._handshake)
        cdp.on("Network.webSocketFrameReceived", network._frame)
        cdp.on("Network.webSocketFrameSent", network._sent)
        await cdp.send("Network.enable")
        return network

    def clear(self) -> None:
        self.requests.clear()
        self.sockets.clear()

    def _request(self, event: dict[str, Any]) -> None:
        request = event["request"]
        if request["method"] == "PUT" and "/api/collaboration/session/" in request["url"]:
            self.requests[event["requestId"]] = {"sent": event["timestamp"]}

    def _finished(self, event: dict[str, Any]) -> None:
        if event["requestId"] in self.requests:
            self.requests[event["requestId"]]["done"] = event["timestamp"]

    def _socket(self, event: dict[str, Any]) -> None:
        url = event["url"]
        if "api/collaboration/room/json:notebook:" in url or FLOOR_PATH in url:
            self.sockets[event["requestId"]] = {"frames": []}

    def _handshake(self, event: dict[str, Any]) -> None:
        if event["requestId"] in self.sockets:
            self.sockets[event["requestId"]]["sent"] = event["timestamp"]

    def _frame(self, event: dict[str, Any]) -> None:
        if event["requestId"] in self.sockets:
            self.sockets[event["requestId"]]["frames"].append(event["timestamp"])

    def _sent(self, event: dict[str, Any]) -> None:
        socket = self.sockets.get(event["requestId"])
        if socket is not None and "asked" not in socket:
            # The page's first message: its sync request (y-websocket sends it on open).
            socket["asked"] = event["timestamp"]

    def server_share(self, messages: int) -> tuple[float, float, float]:
        """Milliseconds the server took to open one notebook for a page: its session request
        and its socket from the handshake until the ``messages``-th message (the one that
        completed the document) arrived; and, of the latter, the time from the page's
        sync request until then (what is left is the handshake's)."""
        (request,) = self.requests.values()
        (socket,) = self.sockets.values()
        session = request["done"] - request["sent"]
        completed = socket["frames"][messages - 1]
        sync = completed - socket["sent"]
        if "asked" not in socket:
            raise RuntimeError("the page sent nothing on the notebook's socket")
        reply = completed - socket["asked"]
        return float(session) * 1000, float(sync) * 1000, float(reply) * 1000


# The transfer alone: a socket of the bench's own that answers the page's first message
# with as many bytes as the document's sync reply, at once. No server can deliver the
# document to the page faster than this.
FLOOR_PATH = "/bench/transfer"
FLOOR_SOCKET = """(url) => new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => socket.send(new Uint8Array([0, 0, 1, 0]));
    socket.onmessage = (event) => { socket.close(); resolve(event.data.byteLength); };
    socket.onerror = () => reject(new Error('the transfer socket failed'));
})"""


class _Sender(WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True

    def on_message(self, message: str | bytes) -> None:
        # One frame in one go, its header and the payload one after the other (tornado's
        # own frame would be a copy of it, a few ms for 9 MB): the process does nothing
        # else meanwhile, so nothing delays it. (A server has other clients to serve:
        # jupyter_rooms writes in fragments, with its event loop free between them.)
        payload = self.settings["payload"]
        connection = self.ws_connection
        assert connection is not None and connection.stream is not None
        connection.stream.write(_frame_header(True, 0x2, len(payload)))
        connection.stream.write(payload)


async def transfer_floor(page: Any, network: Network, size: int, runs: int = 5) -> float:
    """Milliseconds (median of ``runs``) from a socket's handshake until a message of
    ``size`` bytes, sent as soon as the page asks, arrived in the page; timed by the
    page's network record as the server's share is."""
    app = Application([(FLOOR_PATH, _Sender)], payload=os.urandom(size))
    port = free_port()
    listening = app.listen(port, "127.0.0.1")
    times = []
    try:
        for _ in range(runs):
            network.clear()
            received = await page.evaluate(FLOOR_SOCKET, f"ws://127.0.0.1:{port}{FLOOR_PATH}")
            assert received == size, (received, size)
            (socket,) = network.sockets.values()
            # The network record's events come after the page's own.
            for _ in range(100):
                if socket["frames"]:
                    break
                await asyncio.sleep(0.05)
            times.append((socket["frames"][0] - socket["sent"]) * 1000)
    finally:
        listening.stop()
    return percentile(times, 50)


CLOSE_NOTEBOOK = """(path) => {
    for (const w of jupyterapp.shell.widgets('main')) {
        if (w.context && w.context.path === path) w.close();
    }
}"""

# A small notebook the page opens before the measured ones.
WARMUP_CELLS = 10

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


def write_notebook(path: Path, cells: int) -> None:
    """The benchmark's large notebook (as ``run.py``'s open scenario writes it)."""
    nbformat.write(nbformat.from_dict(make_notebook(cells)), str(path))


# What the first cell's editor shows once it is on screen.
FIRST_LINE = "value_0_0 = compute("


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
    """Run ``jupyter lab`` of an interpreter on ``root``; yields its URL, token and pid.

    Run again on the same root, it finds what the previous run kept (its settings, file
    ids and the rooms' histories)."""
    env = {
        **os.environ,
        # The interpreter's own scripts first: ``jupyter`` commands found on the PATH
        # otherwise could be another environment's (another server than the one asked).
        "PATH": os.pathsep.join([str(Path(python).parent), os.environ.get("PATH", "")]),
        **lab_home(root.parent / "jupyter"),
    }
    port, token = free_port(), secrets.token_hex(16)
    logfile = (root.parent / "server.log").open("a")
    process = _spawn(
        jupyter_command(
            "lab", root, port, token, "--LabApp.expose_app_in_browser=True", python=python
        ),
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
        running = psutil.Process(process.pid).cmdline()
        if not running or Path(running[0]) != Path(python):
            raise RuntimeError(f"the server runs {running[:1]}, not {python}")
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
    until the message that completes the document was received (a server may answer the
    sync before it has loaded the notebook; the client's own applying is left out)."""
    started = time.perf_counter()
    client = await YClient.open(await room_url(url, token, path))
    array = client.doc.get("cells", type=Array)
    complete = asyncio.Event()
    received = started
    receive = client._receive

    def timed(messages: list[bytes]) -> None:
        nonlocal received
        received = time.perf_counter()
        receive(messages)

    # Nothing was received yet: the client handles its first messages once this returns.
    client._receive = timed  # type: ignore[method-assign]

    def check() -> None:
        if (client.synced.is_set() and len(array) >= cells) or client.closed:
            complete.set()

    client.on_change = check
    check()
    await asyncio.wait_for(complete.wait(), 300)
    if client.closed:
        raise RuntimeError(f"the connection to {path} ended: {client.error!r}")
    client.on_change = None
    return client, (received - started) * 1000


async def lab_page(browser: Any, url: str, token: str, workspace: str) -> tuple[Any, Network]:
    """A page of JupyterLab with an empty workspace of its own, and its network's record."""
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await page.add_init_script(RECORD)
    network = await Network.attach(page)
    await page.goto(f"{url}/lab/workspaces/{workspace}?reset&token={token}")
    await page.wait_for_function(
        "() => window.jupyterapp && jupyterapp.shell.widgets", timeout=120_000
    )
    await page.locator(".jp-Launcher").first.wait_for(timeout=120_000)
    return page, network


async def open_in_page(page: Any, network: Network, path: str, cells: int) -> dict[str, float]:
    """Open a notebook in a page: milliseconds until it is on screen, and the server's."""
    network.clear()
    opened: dict[str, float] = await page.evaluate(OPEN_NOTEBOOK, [path, cells, FIRST_LINE])
    opened["session"], opened["sync"], opened["reply"] = network.server_share(
        int(opened["messages"])
    )
    opened["server"] = opened["session"] + opened["sync"]
    return opened


async def measure(
    name: str, python: str, cells: int, edits: int, profile: Path | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-browser-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        write_notebook(root / "big.ipynb", cells)
        # The same notebook under another name, for the server alone.
        shutil.copyfile(root / "big.ipynb", root / "copy.ipynb")
        write_notebook(root / "warmup.ipynb", WARMUP_CELLS)
        size = (root / "big.ipynb").stat().st_size
        async with jupyterlab(python, root) as (url, token, pid), async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page, network = await lab_page(browser, url, token, "bench-first")
            # What a server does once, for the first notebook a page opens (loading its
            # exporters for the page's menus, say), is done on another notebook first.
            await open_in_page(page, network, "warmup.ipynb", WARMUP_CELLS)
            await page.evaluate(CLOSE_NOTEBOOK, "warmup.ipynb")
            log(f"[{name}] the server alone, cold: session and sync of a Python client")
            with profiling(pid, profile and profile / f"{name}-alone-cold.txt"):
                alone, server_cold = await open_room(url, token, "copy.ipynb", cells)
            document = len(alone.doc.get_update())
            await alone.close()

            log(f"[{name}] opening a notebook of {cells} cells ({size / 1e6:.1f} MB), cold")
            with profiling(pid, profile and profile / f"{name}-page-cold.txt"):
                cold = await open_in_page(page, network, "big.ipynb", cells)
            log(f"[{name}] the same in a second page, warm")
            second, second_network = await lab_page(browser, url, token, "bench-second")
            # Before the page opens a notebook: once it has one of this size open, its
            # sockets take many times as long to deliver a large message.
            log(f"[{name}] the transfer alone, into the second page")
            floor = await transfer_floor(second, second_network, document)
            with profiling(pid, profile and profile / f"{name}-page-warm.txt"):
                warm = await open_in_page(second, second_network, "big.ipynb", cells)
            rss = psutil.Process(pid).memory_info().rss

            log(f"[{name}] the server alone, warm")
            with profiling(pid, profile and profile / f"{name}-alone-warm.txt"):
                client, server_warm = await open_room(url, token, "big.ipynb", cells)
            log(f"[{name}] {edits} edits from Python")
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
        log(f"[{name}] the server alone, reopened after a restart")
        async with jupyterlab(python, root) as (url, token, pid):
            with profiling(pid, profile and profile / f"{name}-alone-reopened.txt"):
                again, server_reopened = await open_room(url, token, "copy.ipynb", cells)
            await again.close()
    return {
        "target": name,
        "cells": cells,
        "file_mb": round(size / 1e6, 1),
        "open_page_cold_ms": round(cold["rendered"]),
        "open_page_cold_server_ms": round(cold["server"]),
        "open_page_cold_session_ms": round(cold["session"]),
        "open_page_cold_reply_ms": round(cold["reply"]),
        "open_page_warm_ms": round(warm["rendered"]),
        "open_page_warm_server_ms": round(warm["server"]),
        "open_page_warm_session_ms": round(warm["session"]),
        "open_page_warm_reply_ms": round(warm["reply"]),
        "transfer_floor_ms": round(floor),
        "document_mb": round(document / 1e6, 1),
        "open_server_cold_ms": round(server_cold),
        "open_server_warm_ms": round(server_warm),
        "open_server_reopened_ms": round(server_reopened),
        "edits": edits,
        "edit_median_ms": round(percentile(latencies, 50), 1),
        "edit_p99_ms": round(percentile(latencies, 99), 1),
        "server_rss_mb": round(rss / 2**20),
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


REPLY_ROW = "    of which the page's sync request until the document is in"
ROWS = [
    (
        "open in the page, cold: every cell in its model, first cell on screen",
        "open_page_cold_ms",
        "ms",
    ),
    (
        "  the server's share: session request, socket until the document is in",
        "open_page_cold_server_ms",
        "ms",
    ),
    ("    of which the session request", "open_page_cold_session_ms", "ms"),
    (REPLY_ROW, "open_page_cold_reply_ms", "ms"),
    ("open in a second page, warm (the room is open)", "open_page_warm_ms", "ms"),
    ("  the server's share", "open_page_warm_server_ms", "ms"),
    ("    of which the session request", "open_page_warm_session_ms", "ms"),
    (REPLY_ROW, "open_page_warm_reply_ms", "ms"),
    (
        "the transfer alone: the document's bytes from a bare socket into the page",
        "transfer_floor_ms",
        "ms",
    ),
    ("the server alone (Python client), cold: session + sync", "open_server_cold_ms", "ms"),
    ("  warm: the pages have the notebook open", "open_server_warm_ms", "ms"),
    ("  reopened after a server restart", "open_server_reopened_ms", "ms"),
    ("edit Python -> page, median", "edit_median_ms", "ms"),
    ("edit Python -> page, p99", "edit_p99_ms", "ms"),
    ("server memory (RSS) with the notebook open", "server_rss_mb", "MB"),
]


def table(results: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table, a column per target; with several runs, each
    cell gives every run's figure in turn."""
    names = list(dict.fromkeys(result["target"] for result in results))
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key, unit in ROWS:
        cells = []
        for name in names:
            figures = [str(result[key]) for result in results if result["target"] == name]
            cells.append(f"{' / '.join(figures)} {unit}")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines)


def shares(results: list[dict[str, Any]], name: str, peer: str) -> list[str]:
    """The server's share of ``name``'s opens as a fraction of ``peer``'s, run by run."""
    lines = []
    for which in ("cold", "warm"):
        key = f"open_page_{which}_server_ms"
        ours = {result["run"]: result[key] for result in results if result["target"] == name}
        theirs = {result["run"]: result[key] for result in results if result["target"] == peer}
        ratios = [ours[run] / theirs[run] for run in sorted(ours) if theirs.get(run)]
        if ratios:
            listed = " / ".join(f"{ratio:.2f}" for ratio in ratios)
            median = percentile(ratios, 50)
            lines.append(
                f"the server's share of a {which} open, {name} / {peer}: {listed} "
                f"(median {median:.2f})"
            )
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=2000, help="the notebook's size")
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--targets", default="jupyter_rooms,jupyter-collaboration")
    parser.add_argument(
        "--runs", type=int, default=1, help="measure every target this many times, in turn"
    )
    parser.add_argument("--cache", type=Path, default=HERE / ".cache")
    parser.add_argument(
        "--json",
        type=Path,
        help="also write the figures to this file (a list, a run's target each)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample each server with py-spy while the pages open the notebook, into "
        "collapsed stacks in this directory",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be 1 or more")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if not shutil.which(CHROMIUM):
        sys.exit(f"Chromium is needed at {CHROMIUM}")
    targets = []
    for name in args.targets.split(","):
        try:
            python = rooms_python() if name == "jupyter_rooms" else collaboration_python(args.cache)
        except Unavailable as exc:
            log(f"[{name}] skipped: {exc}")
            continue
        targets.append((name, python))
    results = []
    for run in range(1, args.runs + 1):
        for name, python in targets:
            log(f"[{name}] run {run} of {args.runs}, load average {os.getloadavg()}")
            profile = args.profile
            if profile is not None and args.runs > 1:
                profile = profile / f"run{run}"
                profile.mkdir(exist_ok=True)
            result = await measure(name, python, args.cells, args.edits, profile)
            results.append({**result, "run": run})
    print(table(results))
    names = [name for name, _ in targets]
    if "jupyter_rooms" in names and "jupyter-collaboration" in names:
        print("\n".join(shares(results, "jupyter_rooms", "jupyter-collaboration")))
    for result in results:
        print(
            f"{result['target']}, run {result['run']}: load average at the end "
            f"{result['load_average']}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
