"""A real redis-server for tests, on 127.0.0.1 and a free port, stopped and restarted at will."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers import free_port


class RedisServer:
    """A redis-server process with its data in a directory of its own.

    With ``password``, clients must give it; with ``tls``, clients speak TLS to ``port``
    (a self-signed certificate made with openssl, which ``url`` tells them to trust).
    """

    def __init__(self, directory: Path, *, password: str = "", tls: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is not installed (.ci/run installs it)")
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.directory = directory
        self.password = password
        self.tls = tls
        self.port = free_port()
        # Where the tests see whether the server is up: the port itself, unless it is TLS.
        self.plain_port = free_port() if tls else self.port
        self.process: subprocess.Popen[bytes] | None = None
        if tls:
            self._make_certificate()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.directory}/cert.pem"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _make_certificate(self) -> None:
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-keyout", str(self.directory / "key.pem"),
                "-out", str(self.directory / "cert.pem"),
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip

    def start(self) -> None:
        command = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.plain_port),
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        if self.tls:
            command += [
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.directory / "cert.pem"),
                "--tls-key-file", str(self.directory / "key.pem"),
                "--tls-ca-cert-file", str(self.directory / "cert.pem"),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.plain_port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    # Without the password, the answer is an error: it is up all the same.
                    if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
