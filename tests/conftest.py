from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # Tornado, which carries the websocket wires, runs on asyncio only.
    return "asyncio"
