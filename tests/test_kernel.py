"""connect("jupyter") from code in real kernels: started by the server as JupyterLab
starts them, with nothing to configure; across cells; through a server restart; and
the blocking form in a plain script."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from pycrdt import Text
from tornado.httpclient import AsyncHTTPClient

from jupyter_rooms.jupyter.kernelenv import ENV_ROOT, ENV_TOKEN, ENV_URL, notebook_room_id

from helpers import wait_until
from jupyter_process import TOKEN, ServerProcess

pytestmark = pytest.mark.anyio

FAST = ("--RoomsApp.save_delay=0.1", "--RoomsApp.poll_interval=0.1")


class Kernel:
    """Runs cells in a kernel and returns what they print, or raises what they raised."""

    def __init__(self, client: AsyncKernelClient) -> None:
        self.client = client

    async def run(self, code: str, within: float = 60) -> str:
        output: list[str] = []
        errors: list[str] = []

        def hook(message: dict[str, Any]) -> None:
            kind = message["header"]["msg_type"]
            content = message["content"]
            if kind == "stream":
                output.append(content["text"])
            elif kind == "error":
                errors.append(f"{content['ename']}: {content['evalue']}")

        reply = await self.client.execute_interactive(
            textwrap.dedent(code), output_hook=hook, timeout=within
        )
        if reply["content"]["status"] != "ok" or errors:
            raise AssertionError(f"the cell failed: {errors or reply['content']}")
        return "".join(output)


async def start_session(
    server: ServerProcess, notebook: str, *, type: str = "notebook", name: str = ""
) -> Kernel:
    """Open a notebook as JupyterLab does: a session, whose kernel the server starts."""
    name = name or notebook.rsplit("/", 1)[-1]
    body = {"path": notebook, "type": type, "name": name, "kernel": {"name": "python3"}}
    response = await AsyncHTTPClient().fetch(
        server.url + "api/sessions",
        method="POST",
        body=json.dumps(body),
        headers={"Authorization": f"token {TOKEN}"},
    )
    kernel_id = json.loads(response.body)["kernel"]["id"]
    runtime = Path(server.env["JUPYTER_RUNTIME_DIR"])
    connection_file = runtime / f"kernel-{kernel_id}.json"
    await wait_until(connection_file.exists, within=60)
    client = AsyncKernelClient(connection_file=str(connection_file))
    client.load_connection_file()
    client.start_channels()
    await client.wait_for_ready(timeout=60)
    return Kernel(client)


@pytest.fixture
async def lab(make_server: Callable[..., ServerProcess]) -> AsyncIterator[ServerProcess]:
    server = make_server(*FAST)
    await server.start()
    (server.root / "work").mkdir()
    nbformat.write(nbformat.v4.new_notebook(), server.root / "work" / "analysis.ipynb")
    yield server


async def test_a_cell_connects_with_no_arguments_but_the_room(lab: ServerProcess) -> None:
    kernel = await start_session(lab, "work/analysis.ipynb")
    try:
        printed = await kernel.run(
            """
            from pycrdt import Text
            from jupyter_rooms import connect

            async with connect("jupyter", id="notes.txt") as client:
                client.doc.get("source", type=Text).insert(0, "written by a kernel")
            async with connect("jupyter") as own:
                print(own.id)
            """
        )
        # The blocking form is for scripts: in a cell, it says what to write instead.
        refused = await kernel.run(
            """
            try:
                with connect("jupyter", id="notes.txt") as client:
                    pass
            except RuntimeError as error:
                print(error)
            """
        )
    finally:
        kernel.client.stop_channels()
    # With no id, the room is the kernel's own notebook.
    assert printed.strip() == "work/analysis.ipynb"
    assert "use 'async with connect(...)'" in refused
    await wait_until(lambda: (lab.root / "notes.txt").exists())
    assert (lab.root / "notes.txt").read_text() == "written by a kernel"


async def test_a_kernel_without_a_notebook_is_asked_for_the_room(lab: ServerProcess) -> None:
    # A console, as JupyterLab opens one: its session names no file.
    kernel = await start_session(lab, "work/console-1-a1b2", type="console", name="Console 1")
    try:
        printed = await kernel.run(
            """
            from jupyter_rooms import connect

            try:
                async with connect("jupyter") as client:
                    print("joined", client.id)
            except ValueError as error:
                print(error)
            """
        )
    finally:
        kernel.client.stop_channels()
    assert "needs id=" in printed and "Console 1', is no file" in printed
    assert sorted(p.name for p in (lab.root / "work").iterdir()) == ["analysis.ipynb"]


def test_only_an_existing_file_is_the_kernels_notebook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "a.ipynb").write_text("{}")
    monkeypatch.setenv(ENV_ROOT, str(tmp_path))
    sessions = {
        str(tmp_path / "work" / "a.ipynb"): "work/a.ipynb",
        "work/a.ipynb": "work/a.ipynb",  # relative to the root already
        str(tmp_path / "work" / "renamed.ipynb"): None,  # gone since the kernel started
        str(tmp_path / "work"): None,
        str(tmp_path): None,
        str(tmp_path.parent / "elsewhere.ipynb"): None,
    }
    for session, room in sessions.items():
        monkeypatch.setenv("JPY_SESSION_NAME", session)
        assert notebook_room_id() == room, session


async def test_the_kernel_credential_opens_rooms_and_nothing_else(
    lab: ServerProcess,
) -> None:
    kernel = await start_session(lab, "work/analysis.ipynb")
    try:
        printed = await kernel.run(
            f"""
            import os, urllib.request, urllib.error
            url, token = os.environ["{ENV_URL}"], os.environ["{ENV_TOKEN}"]
            print(token != "{TOKEN}")
            request = urllib.request.Request(
                url + "api/contents", headers={{"Authorization": "token " + token}}
            )
            try:
                urllib.request.urlopen(request)
                print("contents: open")
            except urllib.error.HTTPError as error:
                print("contents:", error.code)
            """
        )
    finally:
        kernel.client.stop_channels()
    assert printed.split("\n")[:2] == ["True", "contents: 403"]


async def test_a_client_lives_across_cells(lab: ServerProcess) -> None:
    kernel = await start_session(lab, "work/analysis.ipynb")
    try:
        await kernel.run(
            """
            from pycrdt import Text
            from jupyter_rooms import connect

            client = await connect("jupyter", id="live.txt").start()
            text = client.doc.get("source", type=Text)
            text += "one "
            """
        )
        async with lab.join("live.txt") as other:
            seen = other.doc.get("source", type=Text)
            await wait_until(lambda: str(seen) == "one ")
            await kernel.run('text += "two "')
            await wait_until(lambda: str(seen) == "one two ")
            seen += "three"
            printed = await kernel.run(
                """
                import anyio
                with anyio.fail_after(10):
                    while "three" not in str(text):
                        await anyio.sleep(0.02)
                print(str(text), client.synchronized.is_set())
                """
            )
            assert printed.strip() == "one two three True"
            printed = await kernel.run("await client.stop(); print(client.connected.is_set())")
            assert printed.strip() == "False"
    finally:
        kernel.client.stop_channels()
    live = lab.root / "live.txt"
    await wait_until(lambda: live.exists() and live.read_text() == "one two three")


async def test_a_kernel_rides_through_a_server_restart(
    make_server: Callable[..., ServerProcess], env: dict[str, str]
) -> None:
    server = make_server(*FAST)
    await server.start()
    # A kernel that outlives the server: started on its own, told where the server is
    # as the server would tell it (the rooms credential is kept across restarts).
    token = server.kernel_credential()
    kernel_env = {**env, ENV_URL: server.url, ENV_TOKEN: token, ENV_ROOT: str(server.root)}
    manager = AsyncKernelManager(kernel_name="python3")
    await manager.start_kernel(env=kernel_env, cwd=str(server.root))
    client = manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        kernel = Kernel(client)
        await kernel.run(
            """
            from pycrdt import Text
            from jupyter_rooms import connect

            client = await connect("jupyter", id="log.txt", max_backoff=0.2).start()
            events = []
            client.on_status(lambda status, details: events.append(status))
            text = client.doc.get("source", type=Text)
            text += "before "
            """
        )
        await wait_until(lambda: (server.root / "log.txt").exists())
        server.stop(signal.SIGTERM)
        await kernel.run('text += "during "')
        await server.start()
        printed = await kernel.run(
            """
            import anyio
            with anyio.fail_after(20):
                while not client.synchronized.is_set():
                    await anyio.sleep(0.05)
            text += "after"
            print(events)
            await client.stop()
            """
        )
        assert "disconnected" in printed and "synchronized" in printed
        await wait_until(lambda: (server.root / "log.txt").read_text() == "before during after")
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=True)


async def test_the_blocking_form_in_a_script(lab: ServerProcess) -> None:
    script = textwrap.dedent(
        f"""
        from pycrdt import Text
        from jupyter_rooms import connect

        with connect("jupyter", id="script.txt", url={lab.url!r}, token={TOKEN!r}) as client:
            text = client.doc.get("source", type=Text)
            for word in ["plain ", "scripts ", "work"]:
                text += word
        """
    )
    result = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
    )
    assert result.returncode == 0, result.stderr
    await wait_until(lambda: (lab.root / "script.txt").exists())
    await wait_until(lambda: (lab.root / "script.txt").read_text() == "plain scripts work")
