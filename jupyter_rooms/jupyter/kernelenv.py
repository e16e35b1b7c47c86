"""How code in a kernel finds its Jupyter server's rooms, with nothing to type.

A Jupyter server with the rooms extension puts, in its own environment, which the
kernels it starts inherit:

- ``JUPYTER_ROOMS_URL``: the server's URL (base URL included);
- ``JUPYTER_ROOMS_TOKEN``: a credential that opens rooms and nothing else (not the
  server's token: it cannot run code, list files or reach any other API);
- ``JUPYTER_ROOMS_ROOT``: the server's root directory, so that a kernel can name its own
  notebook's room from ``JPY_SESSION_NAME`` (the notebook's path, which the server
  gives each kernel it starts for a notebook).

The rooms credential is kept in a file readable only by its owner, under the Jupyter
data directory, and reused across restarts, so that a kernel that outlives a server
restart still gets in. Scripts outside a kernel can set the same variables by hand
(``JUPYTER_ROOMS_URL`` and ``JUPYTER_ROOMS_TOKEN``, the latter the server's own token
or the rooms credential).
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

__all__ = [
    "ENV_ROOT",
    "ENV_TOKEN",
    "ENV_URL",
    "is_kernel_token",
    "kernel_token",
    "notebook_room_id",
    "publish",
    "server_from_env",
    "unpublish",
]

ENV_URL = "JUPYTER_ROOMS_URL"
ENV_TOKEN = "JUPYTER_ROOMS_TOKEN"
ENV_ROOT = "JUPYTER_ROOMS_ROOT"


def _token_path() -> Path:
    return Path(jupyter_data_dir()) / "jupyter_rooms" / "kernel_token"


def kernel_token() -> str:
    """The rooms credential of this user's servers: read, or made once and kept.

    Returns:
        The credential.
    """
    path = _token_path()
    try:
        token = path.read_text().strip()
        if len(token) >= 32:
            return token
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token)
    os.replace(tmp, path)
    return token


def is_kernel_token(candidate: str, token: str) -> bool:
    """Whether a credential a client gave is the rooms credential (in constant time)."""
    return bool(candidate) and hmac.compare_digest(candidate.encode(), token.encode())


def publish(url: str, root_dir: str, token: str) -> dict[str, str | None]:
    """Tell the kernels this server starts from now on where its rooms are.

    Args:
        url: The server's URL, base URL included.
        root_dir: The server's root directory.
        token: The rooms credential.

    Returns:
        The values this replaced (``None`` where unset), for ``unpublish``.
    """
    previous = {name: os.environ.get(name) for name in (ENV_URL, ENV_TOKEN, ENV_ROOT)}
    os.environ[ENV_URL] = url
    os.environ[ENV_TOKEN] = token
    os.environ[ENV_ROOT] = root_dir
    return previous


def unpublish(url: str, previous: dict[str, str | None]) -> None:
    """Put back what ``publish`` replaced, when the server at ``url`` stops.

    A server inside a process that already had a server's address (``bind("jupyter")``
    in a kernel, or in a script that set it) must not leave that process pointing at a
    server that is gone. Nothing changes if another server published since.

    Args:
        url: The URL the stopping server published.
        previous: What ``publish`` returned.
    """
    if os.environ.get(ENV_URL) != url:
        return
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def server_from_env() -> tuple[str | None, str | None]:
    """The server's URL and credential from the environment, where set.

    Returns:
        ``(url, token)``, each ``None`` where not set.
    """
    return os.environ.get(ENV_URL) or None, os.environ.get(ENV_TOKEN) or None


def notebook_room_id() -> str | None:
    """The room of the notebook this kernel belongs to, if the server said which.

    Only a file that exists counts: a console's session names none (``Console 1``), and
    a notebook renamed since its kernel started is no longer where the session says;
    joining either would make a new file out of a name.

    Returns:
        The notebook's path relative to the server's root, or ``None``.
    """
    session = os.environ.get("JPY_SESSION_NAME")
    root = os.environ.get(ENV_ROOT)
    if not session or not root:
        return None
    # Some servers give the path relative to the root already.
    path = session if os.path.isabs(session) else os.path.join(root, session.lstrip("/"))
    relative = os.path.relpath(path, root)
    if relative == os.curdir or relative.startswith(os.pardir) or not os.path.isfile(path):
        return None
    return relative.replace(os.sep, "/")
