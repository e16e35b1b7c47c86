"""How long a large message takes from a tornado socket into headless Chromium, written
in several ways, with the server's process idle and with a busy thread in it.

A page opening a large notebook gets the document's sync reply (9.1 MB for the
benchmark's 2,000-cell notebook) in one message. jupyter_rooms writes a message that
large in fragments, with the event loop free between them (``write_large_message``).
Every write to a socket lets the interpreter's other threads run, and a writer that
let go waits up to the switch interval (5 ms) to get the interpreter back while
another thread is busy; in a Jupyter server one is whenever a page opens a notebook
(jupyter_server lists nbconvert's exporters in a thread then, for 300-400 ms on this
machine). So how a message is cut into writes decides how long it takes::

    python bench/large_write.py                 # every way, idle and busy, 11 times each
    python bench/large_write.py --runs 21 --size 4000000

The ways:

- ``one frame``: the whole message in one frame, handed to the stream at once (tornado's
  own ``write_message``, without its task);
- ``jupyter_rooms``: ``write_large_message`` as the rooms use it;
- ``256 KiB, header apart``: fragments of 256 KiB, each header written to the stream
  before its data, each fragment once the one before it is flushed (how jupyter_rooms
  wrote large messages before).

Each is served by a process of its own (this script, ``--serve``), in which ``busy``
runs a thread of pure Python loops. The page times, with ``performance.now()``, from
sending its request until the message is in; the median and the 90th percentile of
``--runs`` are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
from asyncio import Future
from pathlib import Path
from typing import Any

from localjupyter import CHROMIUM, CHROMIUM_ARGS, free_port
from playwright.async_api import async_playwright
from scenarios import percentile
from tornado.web import Application
from tornado.websocket import WebSocketHandler

from jupyter_rooms.websocket import _frame_header, write_large_message

WAYS = ["one frame", "jupyter_rooms", "256 KiB, header apart"]

# Resolves with the milliseconds from the page's request until the message is in.
RECEIVE = """(url) => new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    socket.binaryType = 'arraybuffer';
    let sent = 0;
    socket.onopen = () => { sent = performance.now(); socket.send(new Uint8Array([1])); };
    socket.onmessage = (event) => {
        const took = performance.now() - sent;
        socket.close();
        resolve([took, event.data.byteLength]);
    };
    socket.onerror = () => reject(new Error('the socket failed'));
})"""


def _header_apart(connection: Any, message: bytes, fragment: int = 262_144) -> None:
    """Fragments written as jupyter_rooms wrote them before: header, then data."""
    stream = connection.stream
    data = memoryview(message)

    def write_from(start: int) -> None:
        end = min(start + fragment, len(data))
        stream.write(_frame_header(end == len(data), 0x0 if start else 0x2, end - start))
        written: Future[None] = stream.write(data[start:end])
        if end < len(data):
            written.add_done_callback(lambda _: write_from(end))

    write_from(0)


class _Sender(WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        # The page is about:blank, whose origin is "null".
        return True

    def on_message(self, message: str | bytes) -> None:
        payload: bytes = self.settings["payload"]
        connection = self.ws_connection
        assert connection is not None
        way = self.settings["way"]
        if way == "one frame":
            connection._write_frame(True, 0x2, payload)
        elif way == "jupyter_rooms":
            if write_large_message(connection, payload) is None:
                connection._write_frame(True, 0x2, payload)
        else:
            _header_apart(connection, payload)


def _busy() -> None:
    total = 0
    while True:
        for number in range(1000):
            total += number


async def serve(way: str, busy: bool, port: int, size: int) -> None:
    """Serve the page's requests with one way of writing, until killed."""
    app = Application([("/", _Sender)], way=way, payload=os.urandom(size))
    app.listen(port, "127.0.0.1")
    if busy:
        threading.Thread(target=_busy, daemon=True).start()
    print("listening", flush=True)
    await asyncio.Event().wait()


async def measure(page: Any, way: str, busy: bool, size: int, runs: int) -> list[float]:
    """Milliseconds the page took to receive the message, ``runs`` times."""
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        *(sys.executable, __file__, "--serve", way, "busy" if busy else "idle", str(port)),
        *("--size", str(size)),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        if (await server.stdout.readline()).strip() != b"listening":
            raise RuntimeError(f"the server for {way!r} did not start")
        times = []
        for _ in range(runs):
            took, received = await page.evaluate(RECEIVE, f"ws://127.0.0.1:{port}/")
            if received != size:
                raise RuntimeError(f"{way!r} delivered {received} bytes, not {size}")
            times.append(took)
            await asyncio.sleep(0.2)
        return times
    finally:
        server.kill()
        await server.wait()


async def main(runs: int, size: int) -> list[dict[str, Any]]:
    results = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        for busy in (False, True):
            for way in WAYS:
                times = await measure(page, way, busy, size, runs)
                results.append(
                    {
                        "way": way,
                        "server": "a busy thread" if busy else "idle",
                        "median_ms": round(percentile(times, 50), 1),
                        "p90_ms": round(percentile(times, 90), 1),
                        "runs": runs,
                        "size": size,
                    }
                )
        await browser.close()
    print(f"{size / 1e6:.1f} MB into headless Chromium, {runs} times each: median / p90")
    print("| written as | server idle | a busy thread in the server |")
    print("|---|---|---|")
    for way in WAYS:
        cells = [f"{r['median_ms']:.0f} / {r['p90_ms']:.0f} ms" for r in results if r["way"] == way]
        print(f"| {way} | {' | '.join(cells)} |")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--size", type=int, default=9_100_000, help="bytes in the message")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--serve", nargs=3, metavar=("WAY", "BUSY", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        way, busy, port = args.serve
        asyncio.run(serve(way, busy == "busy", int(port), args.size))
    else:
        if args.runs < 1 or args.size < 1:
            parser.error("--runs and --size must be at least 1")
        figures = asyncio.run(main(args.runs, args.size))
        if args.json is not None:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
