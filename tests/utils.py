"""Small helpers shared by the tests."""

from __future__ import annotations

import socket
from collections.abc import Callable

import anyio


async def wait_until(predicate: Callable[[], object], *, within: float = 10.0) -> None:
    """Poll ``predicate`` until it is true; fail after ``within`` seconds."""
    with anyio.fail_after(within):
        while not predicate():
            await anyio.sleep(0.01)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
