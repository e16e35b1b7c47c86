"""A real ``jupyter server`` process for tests, in the test's own directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest.mock import patch

import anyio
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from jupyter_rooms import connect
from jupyter_rooms.jupyter.kernelenv import kernel_token

from helpers import jupyter_command

TOKEN = "secret-token"


class ServerProcess:
    """A ``jupyter server`` started with no flag about the extension."""

    def __init__(
        self, root: Path, env: dict[str, str], port: int, *options: str, python: str = ""
    ) -> None:
        self.python = python or sys.executable
        self.token = TOKEN
        self.root = root
        self.env = env
        self.port = port
        self.options = options
        self.url = f"http://127.0.0.1:{port}/"
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = jupyter_command(
            "server", self.root, self.port, TOKEN, *self.options, python=self.python
        )
        with open(self.root.parent / f"server-{self.port}.log", "ab") as log:
            return subprocess.Popen(command, env=self.env, stdout=log, stderr=log)

    async def start(self) -> None:
        self.process = self._spawn()
        headers = {"Authorization": f"token {TOKEN}"}
        with anyio.fail_after(60):
            while True:
                assert self.process.poll() is None, "the server exited"
                try:
                    await AsyncHTTPClient().fetch(self.url + "api/rooms", headers=headers)
                    return
                except (OSError, HTTPClientError):
                    await anyio.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kernel_credential(self) -> str:
        """The rooms credential this server gives the kernels it starts."""
        with patch.dict(os.environ, {"JUPYTER_DATA_DIR": self.env["JUPYTER_DATA_DIR"]}):
            return kernel_token()

    def join(self, path: str, **options: Any) -> Any:
        return connect("jupyter", id=path, url=self.url, token=TOKEN, **options)

    async def rooms(self) -> dict[str, dict[str, Any]]:
        """The open rooms as ``GET api/rooms`` lists them, by id."""
        headers = {"Authorization": f"token {TOKEN}"}
        response = await AsyncHTTPClient().fetch(self.url + "api/rooms", headers=headers)
        return {room["id"]: room for room in json.loads(response.body)["rooms"]}

    def log_text(self) -> str:
        """What the server wrote to its log so far."""
        return (self.root.parent / f"server-{self.port}.log").read_text(errors="replace")
