from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jupyter_rooms.jupyter.kernelenv import ENV_ROOT, ENV_TOKEN, ENV_URL

from helpers import INPUTS_TRIED, free_port
from jupyter_process import ServerProcess
from redis_server import RedisServer

# What a Jupyter server tells its kernels through the environment: a server running in
# the test process sets them in it, so each test starts and ends without them.
_KERNEL_ENV = (ENV_URL, ENV_TOKEN, ENV_ROOT, "JPY_SESSION_NAME")


@pytest.fixture
def anyio_backend() -> str:
    # Tornado, which carries the websocket wires, runs on asyncio only.
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_kernel_env() -> Iterator[None]:
    saved = {key: os.environ.pop(key, None) for key in _KERNEL_ENV}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Jupyter's directories in the test's directory; the installed config still applies."""
    env = dict(os.environ)
    for name in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR"):
        env[name] = str(tmp_path / name.lower())
    return env


@pytest.fixture
def make_server(tmp_path: Path, env: dict[str, str]) -> Iterator[Callable[..., ServerProcess]]:
    root = tmp_path / "root"
    root.mkdir()
    servers: list[ServerProcess] = []

    def make(
        *options: str,
        port: int | None = None,
        python: str = "",
        extra_env: dict[str, str] | None = None,
    ) -> ServerProcess:
        server = ServerProcess(
            root, {**env, **(extra_env or {})}, port or free_port(), *options, python=python
        )
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop(signal.SIGKILL)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many hostile inputs (malformed messages, bad paths, credentials...) the
    tests tried: a fuzz test that tried none proves nothing."""
    if not INPUTS_TRIED:
        return
    terminalreporter.write_sep("-", f"hostile inputs tried: {INPUTS_TRIED.total()}")
    for kind, count in sorted(INPUTS_TRIED.items()):
        terminalreporter.write_line(f"{count:7d}  {kind}")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server, on 127.0.0.1 and a free port, with its data in the test's directory."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server's root; Jupyter's own directories go to the test's directory."""
    for name in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    root = tmp_path / "root"
    root.mkdir()
    return root
