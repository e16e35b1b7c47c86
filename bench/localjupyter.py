"""A Jupyter server and a headless Chromium on this machine, as the benchmarks and the
tests run them: their command lines and settings, spelled once.

The tests import it too (``tests/helpers.py`` puts this directory on their path).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# Headless, and quiet: nothing of Chromium's own reaches beyond the machine.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_PROGRAMS = {
    "server": ["-m", "jupyter_server"],
    # The module, not ``-m jupyter lab``: that runs the first ``jupyter-lab`` it finds,
    # which may be another environment's.
    "lab": ["-m", "jupyterlab"],
}


def jupyter_command(
    app: str, root: str | os.PathLike[str], port: int, token: str, *options: str, python: str = ""
) -> list[str]:
    """The command line of a Jupyter server on 127.0.0.1 and one port only, serving
    ``root`` with ``token``, with no flag about jupyter_rooms (its installation enables it).

    Args:
        app: ``"server"`` (jupyter_server alone) or ``"lab"`` (JupyterLab).
        root: The server's root directory.
        port: Its port.
        token: The token clients must give.
        options: More command-line options.
        python: The Python to run it with; this one by default.
    """
    return [
        python or sys.executable,
        *_PROGRAMS[app],
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
        *options,
    ]


def lab_home(home: Path) -> dict[str, str]:
    """Jupyter's and JupyterLab's directories under ``home``, set up so that a page shows
    only what it is asked to (no news toast, no update check); the environment variables
    that point a server at them.

    Args:
        home: A directory of the caller's; made if missing. A server run again on the
            same one finds its settings, file ids and workspaces.
    """
    config = home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "LabApp": {
                    "news_url": None,
                    "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
                }
            }
        )
    )
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    return {
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
    }
