"""The extension tested as Jupyter server extensions are: with pytest-jupyter's fixtures,
whose server loads it through ``jpserver_extensions`` (under a base URL that needs
escaping, ``/a%40b/``) and whose clients are real websockets and HTTP requests.

pytest-jupyter's plugin runs every coroutine test of the session it is loaded in, in its
own event loop: test_pytest_jupyter.py runs this file in a pytest of its own
(``pytest -p pytest_jupyter.jupyter_server tests/pytest_jupyter_suite.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest
from jupyter_server.serverapp import ServerApp
from pycrdt import Text
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

from jupyter_rooms import connect
from jupyter_rooms.jupyter.handlers import KERNEL_TOKEN_KEY
from jupyter_rooms.jupyter.kernelenv import is_kernel_token, kernel_token
from jupyter_rooms.notebook import Notebook
from jupyter_rooms.protocol import sync_update
from jupyter_rooms.websocket import ClientChannel

from helpers import RawPeer


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_rooms": True}},
        "RoomsApp": {"save_delay": 0.1, "poll_interval": 0.1, "cleanup_delay": 0.0},
    }


@pytest.fixture
def join(jp_serverapp: Any, jp_http_port: int, jp_base_url: str) -> Callable[..., Any]:
    """Join a room with jupyter_rooms's own client."""
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}"
    token = jp_serverapp.identity_provider.token

    def join(path: str, **options: Any) -> Any:
        return connect("jupyter", id=path, url=url, token=token, **options)

    return join


async def until(predicate: Callable[[], object], seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not predicate():
            await asyncio.sleep(0.02)


def read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


async def rooms(jp_fetch: Any) -> dict[str, dict[str, Any]]:
    response = await jp_fetch("api", "rooms")
    return {room["id"]: room for room in json.loads(response.body)["rooms"]}


async def refused(jp_ws_fetch: Any, *parts: str, **options: Any) -> int:
    """The HTTP status that refuses a websocket request."""
    with pytest.raises(HTTPClientError) as error:
        connection = await jp_ws_fetch(*parts, **options)
        connection.close()
    return error.value.code


async def test_a_raw_websocket_and_a_client_edit_a_text_file(
    jp_ws_fetch: Any, jp_fetch: Any, jp_root_dir: Path, join: Callable[..., Any]
) -> None:
    (jp_root_dir / "notes.txt").write_text("one\n")
    connection = await jp_ws_fetch("api", "rooms", "notes.txt")
    channel = ClientChannel(connection, "notes.txt")
    raw = RawPeer(channel)
    await raw.sync()
    reader = asyncio.create_task(raw.read_until_closed())
    raw_text = raw.doc.get("source", type=Text)
    assert str(raw_text) == "one\n"
    async with join("notes.txt") as client:
        text = client.doc.get("source", type=Text)
        before = raw.doc.get_state()
        raw_text.insert(0, "zero\n")
        await channel.send(sync_update(raw.doc.get_update(before)))
        text += "two\n"
        expected = "zero\none\ntwo\n"
        await until(lambda: str(text) == expected and str(raw_text) == expected)
        await until(lambda: read(jp_root_dir / "notes.txt") == expected)
        listed = (await rooms(jp_fetch))["notes.txt"]
        assert listed["clients"] == 2
        assert listed["last_saved"] is not None
    connection.close()
    await reader


async def test_two_clients_edit_a_notebook(
    jp_fetch: Any, jp_root_dir: Path, join: Callable[..., Any]
) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("a = 1")]
    nbformat.write(nb, jp_root_dir / "nb.ipynb")
    async with join("nb.ipynb") as alice, join("nb.ipynb") as bob:
        Notebook(alice.doc)[0].source = "a = 2"
        Notebook(bob.doc).append_cell("# the end", cell_type="markdown")

        def saved() -> bool:
            try:
                on_disk = nbformat.read(jp_root_dir / "nb.ipynb", as_version=4)
                nbformat.validate(on_disk)
            except (ValueError, nbformat.ValidationError):
                return False
            return [cell.source for cell in on_disk.cells] == ["a = 2", "# the end"]

        await until(saved)
    on_disk = nbformat.read(jp_root_dir / "nb.ipynb", as_version=4)
    assert on_disk.cells[0].id == nb.cells[0].id


async def test_renames_and_deletions_through_the_contents_api(
    jp_fetch: Any, jp_root_dir: Path, join: Callable[..., Any]
) -> None:
    (jp_root_dir / "draft.txt").write_text("draft\n")
    async with join("draft.txt", reconnect=False) as client:
        await jp_fetch(
            "api",
            "contents",
            "draft.txt",
            method="PATCH",
            body=json.dumps({"path": "final.txt"}),
        )
        with anyio.fail_after(10):
            while list(await rooms(jp_fetch)) != ["final.txt"]:
                await asyncio.sleep(0.05)
        client.doc.get("source", type=Text).insert(0, "renamed ")
        await until(lambda: read(jp_root_dir / "final.txt") == "renamed draft\n")
        assert client.connected
        await jp_fetch("api", "contents", "final.txt", method="DELETE")
        await until(lambda: not client.connected)
        assert client.close_code == 4404 and "deleted" in client.close_reason
    assert read(jp_root_dir / "final.txt") is None


async def test_credentials_and_paths_are_checked_before_anything_opens(
    jp_ws_fetch: Any, jp_fetch: Any, jp_root_dir: Path, tmp_path: Path
) -> None:
    (jp_root_dir / "sub").mkdir()
    (jp_root_dir / ".hidden.txt").write_text("secret")
    (jp_root_dir / "link").symlink_to(tmp_path)
    for headers in ({"Authorization": "token wrong"}, {"Authorization": ""}):
        assert await refused(jp_ws_fetch, "api", "rooms", "x.txt", headers=headers) == 403
    for path, status in (
        ("../escape.txt", 400),
        ("link/escape.txt", 403),
        (".hidden.txt", 403),
        ("sub", 400),
        ("nodir/x.txt", 404),
    ):
        assert await refused(jp_ws_fetch, "api", "rooms", path) == status, path
    assert await rooms(jp_fetch) == {}
    with pytest.raises(HTTPClientError) as error:
        await jp_fetch("api", "rooms", headers={"Authorization": "token wrong"})
    assert error.value.code == 403
    assert sorted(p.name for p in jp_root_dir.iterdir()) == [".hidden.txt", "link", "sub"]


async def test_kernels_are_let_in_before_the_extension_starts(
    jp_environ: Any, jp_root_dir: Path, jp_http_port: int
) -> None:
    # A kernel that outlived a restart reconnects at once, possibly before the server
    # has run the extension's start hook: its credential works from the first request.
    app = ServerApp(
        port=jp_http_port + 1,
        open_browser=False,
        root_dir=str(jp_root_dir),
        config=Config({"ServerApp": {"jpserver_extensions": {"jupyter_rooms": True}}}),
    )
    app.init_signal = lambda: None  # type: ignore[method-assign]
    app.initialize(argv=[], new_httpserver=False)
    try:
        token = app.web_app.settings.get(KERNEL_TOKEN_KEY, "")
        assert is_kernel_token(token, kernel_token())
    finally:
        app.clear_instance()
