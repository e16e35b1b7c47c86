"""``python -m jupyter_rooms``: a standalone y-websocket server for rooms."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import anyio

from .logroom import LogRoom
from .room import Room
from .wires.websocket import WebsocketServer


def main(argv: list[str] | None = None) -> None:
    """Run a standalone websocket server until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m jupyter_rooms",
        description="Serve rooms over websockets (the y-websocket protocol).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=1234, help="port to listen on (0: any)")
    parser.add_argument(
        "--store",
        metavar="DIR",
        help="keep each room in an update log in DIR, so rooms survive restarts",
    )
    parser.add_argument("--redis-url", help="share rooms with other servers through Redis")
    parser.add_argument(
        "--redis-prefix",
        help="put before every Redis key (servers share rooms only under the same prefix)",
    )
    parser.add_argument(
        "--cleanup-delay",
        type=float,
        default=0.0,
        help="seconds a room stays open after its last client left",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    room_factory = LogRoom.factory(args.store) if args.store else Room

    async def serve() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            server = WebsocketServer(
                room_factory,
                host=args.host,
                port=args.port,
                cleanup_delay=args.cleanup_delay,
                redis_url=args.redis_url,
                redis_prefix=args.redis_prefix,
            )
            async with server:
                print(f"serving rooms on ws://{args.host}:{server.port}/", flush=True)
                async for _ in signals:
                    break

    try:
        anyio.run(serve)
    except OSError as exc:
        sys.exit(f"cannot serve on {args.host}:{args.port}: {exc}")


if __name__ == "__main__":
    main()
