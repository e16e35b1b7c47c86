"""Run jupyter_rooms' standalone websocket server on 127.0.0.1, for the benchmark.

Usage: ``python bench/serve_rooms.py PORT``; it serves until it is terminated.
"""

from __future__ import annotations

import sys

import anyio

from jupyter_rooms import bind


async def serve(port: int) -> None:
    async with bind("websocket", host="127.0.0.1", port=port):
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(serve, int(sys.argv[1]))
