"""Small helpers shared by the tests."""

from __future__ import annotations

from collections.abc import Callable

import anyio


async def wait_until(predicate: Callable[[], object], *, within: float = 10.0) -> None:
    """Poll ``predicate`` until it is true; fail after ``within`` seconds."""
    with anyio.fail_after(within):
        while not predicate():
            await anyio.sleep(0.01)
