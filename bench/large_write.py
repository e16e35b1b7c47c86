"""How long a large message takes from a tornado socket into headless Chromium, written
in several ways, with the server's process idle and with a busy thread in it.

A page opening a large notebook gets the document's sync reply (9.1-9.2 MB for the
benchmark's 2,000-cell notebook) in one message. jupyter_rooms writes a message that
large in fragments, with the event loop free between them (``write_large_message``).
Every write to a socket lets the interpreter's other threads run, and a writer that
let go waits up to the switch interval (5 ms) to get the interpreter back while
another thread is busy; in a Jupyter server one is whenever a page opens a notebook
(jupyter_server lists nbconvert's exporters in a thread then, for 300-400 ms on this
machine). So how a message is cut into writes decides how long it takes::

    python bench/large_write.py                 # every way, idle and busy, 11 times each
    python bench/large_write.py --runs 21 --size 4000000   # random bytes, not a notebook

The ways:

- ``one frame``: the whole message in one frame, handed to the stream at once (tornado's
  own ``write_message``, without its task);
- ``jupyter_rooms``: ``write_large_message`` as the rooms use it;
- ``256 KiB, header apart``: fragments of 256 KiB, each header written to the stream
  before its data, each fragment once the one before it is flushed (how jupyter_rooms
  wrote large messages before);
- ``compressed``: the socket negotiates permessage-deflate (RFC 7692) and sends the
  message as one compressed frame, compressed beforehand (zlib level 1, as a server
  would keep a large document's reply compressed for the pages that join): whether
  fewer bytes reach the page sooner, even with the compressing not counted.

The message is the sync reply of the benchmark's notebook (``scenarios.make_notebook``,
2,000 cells, as ``jupyter_ydoc`` encodes it: 9.2 MB, which level 1 compresses to 5.8
MB), or random bytes of ``--size``. Each way is served by a process of its own (this
script, ``--serve``), in which ``busy`` runs a thread of pure Python loops. The page
times, with ``performance.now()``, from sending its request until the message is in;
the median and the 90th percentile of ``--runs`` are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import zlib
from asyncio import Future
from pathlib import Path
from typing import Any

from jupyter_ydoc import YNotebook
from localjupyter import CHROMIUM, CHROMIUM_ARGS, free_port
from playwright.async_api import async_playwright
from scenarios import make_notebook, percentile
from tornado.web import Application
from tornado.websocket import WebSocketHandler

from jupyter_rooms.websocket import _frame_header, write_large_message

WAYS = ["one frame", "jupyter_rooms", "256 KiB, header apart", "compressed"]

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


def _deflated(message: bytes) -> bytes:
    """A message compressed on its own as permessage-deflate sends it: raw deflate,
    flushed, without the flush's last four bytes (RFC 7692, 7.2.1). It refers to no
    earlier message, so a page reads it whatever the two sides agreed on keeping."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


class _Sender(WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        # The page is about:blank, whose origin is "null".
        return True

    def get_compression_options(self) -> dict[str, Any] | None:
        # Only to agree on permessage-deflate: nothing goes through tornado's compressor.
        return {} if self.settings["way"] == "compressed" else None

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
        elif way == "compressed":
            deflated: bytes = self.settings["deflated"]
            header = bytearray(_frame_header(True, 0x2, len(deflated)))
            header[0] |= 0x40  # RSV1: the message is compressed
            connection.stream.write(bytes(header) + deflated)
        else:
            _header_apart(connection, payload)


def _busy() -> None:
    total = 0
    while True:
        for number in range(1000):
            total += number


def notebook_reply(cells: int = 2000) -> bytes:
    """The sync reply of the benchmark's notebook: the whole document as one update."""
    ynotebook = YNotebook()
    ynotebook.set(make_notebook(cells))
    return ynotebook.ydoc.get_update()


async def serve(way: str, busy: bool, port: int, size: int | None) -> None:
    """Serve the page's requests with one way of writing, until killed."""
    payload = os.urandom(size) if size else notebook_reply()
    deflated = _deflated(payload) if way == "compressed" else b""
    app = Application([("/", _Sender)], way=way, payload=payload, deflated=deflated)
    app.listen(port, "127.0.0.1")
    if busy:
        threading.Thread(target=_busy, daemon=True).start()
    print("listening", flush=True)
    await asyncio.Event().wait()


async def measure(
    page: Any, way: str, busy: bool, size: int | None, length: int, runs: int
) -> list[float]:
    """Milliseconds the page took to receive the message (``length`` bytes), ``runs``
    times."""
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        *(sys.executable, __file__, "--serve", way, "busy" if busy else "idle", str(port)),
        *(("--size", str(size)) if size else ()),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        if (await server.stdout.readline()).strip() != b"listening":
            raise RuntimeError(f"the server for {way!r} did not start")
        times = []
        for _ in range(runs):
            took, received = await page.evaluate(RECEIVE, f"ws://127.0.0.1:{port}/")
            if received != length:
                raise RuntimeError(f"{way!r} delivered {received} bytes, not {length}")
            times.append(took)
            await asyncio.sleep(0.2)
        return times
    finally:
        server.kill()
        await server.wait()


async def main(runs: int, size: int | None) -> list[dict[str, Any]]:
    length = size or len(notebook_reply())
    results = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        for busy in (False, True):
            for way in WAYS:
                times = await measure(page, way, busy, size, length, runs)
                results.append(
                    {
                        "way": way,
                        "server": "a busy thread" if busy else "idle",
                        "median_ms": round(percentile(times, 50), 1),
                        "p90_ms": round(percentile(times, 90), 1),
                        "runs": runs,
                        "size": length,
                        "message": "random" if size else "notebook",
                    }
                )
        await browser.close()
    what = "random bytes" if size else "the notebook's sync reply"
    print(f"{length / 1e6:.1f} MB ({what}) into headless Chromium, {runs} times each: median / p90")
    print("| written as | server idle | a busy thread in the server |")
    print("|---|---|---|")
    for way in WAYS:
        cells = [f"{r['median_ms']:.0f} / {r['p90_ms']:.0f} ms" for r in results if r["way"] == way]
        print(f"| {way} | {' | '.join(cells)} |")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument(
        "--size", type=int, help="random bytes of this size (default: the notebook's sync reply)"
    )
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--serve", nargs=3, metavar=("WAY", "BUSY", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        way, busy, port = args.serve
        asyncio.run(serve(way, busy == "busy", int(port), args.size))
    else:
        if args.runs < 1 or (args.size is not None and args.size < 1):
            parser.error("--runs and --size must be at least 1")
        figures = asyncio.run(main(args.runs, args.size))
        if args.json is not None:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
