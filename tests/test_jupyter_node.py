"""Yjs's own WebsocketProvider (run by node) and a Python client edit a file's room."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream
from pycrdt import Text

from jupyter_rooms import bind, connect

pytestmark = pytest.mark.anyio

SCRIPT = Path(__file__).parent / "js" / "jupyter_room_client.mjs"
PACKAGES = ["yjs@13", "y-websocket@3", "ws@8"]


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """Yjs, y-websocket and ws installed with npm into a cache directory (once)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to run Yjs's own client")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    prefix = cache / "jupyter_rooms-tests" / "jupyter-node"
    modules = prefix / "node_modules"
    if not all((modules / name.rsplit("@", 1)[0]).is_dir() for name in PACKAGES):
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", *PACKAGES],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return modules


async def test_yjs_websocket_provider_and_python_edit_a_text_file(
    node_modules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    root = tmp_path / "root"
    root.mkdir()
    (root / "shared.txt").write_text("hello\n")
    # The script imports its packages from the node_modules next to it.
    script = node_modules.parent / SCRIPT.name
    shutil.copyfile(SCRIPT, script)
    async with (
        bind("jupyter", root_dir=root, save_delay=0.1, cleanup_delay=0.0) as server,
        connect("jupyter", id="shared.txt", url=server.url, token=server.token) as client,
    ):
        text = client.doc.get("source", type=Text)
        rooms_url = server.url.replace("http", "ws") + "api/rooms"
        command = ["node", str(script), rooms_url, "shared.txt", server.token]
        events: list[dict[str, str]] = []

        async def read_events(stream: anyio.abc.ByteReceiveStream) -> None:
            buffer = ""
            async for chunk in TextReceiveStream(stream):
                buffer += chunk
                *lines, buffer = buffer.split("\n")
                events.extend(json.loads(line) for line in lines if line)

        async with await anyio.open_process(command) as node, anyio.create_task_group() as tg:
            assert node.stdout is not None
            tg.start_soon(read_events, node.stdout)
            with anyio.fail_after(30):
                # Yjs's edit reaches the Python client through the room...
                while str(text) != "js: hello\n":
                    await anyio.sleep(0.02)
                # ...and the Python client's edit reaches Yjs, which then exits.
                text += "py!"
                await node.wait()
        assert node.returncode == 0, events
        synced = [e for e in events if e["event"] == "synced"]
        assert synced == [{"event": "synced", "text": "hello\n"}]
        assert events[-1]["text"] == "js: hello\npy!"
        assert str(text) == "js: hello\npy!"
        with anyio.fail_after(10):
            while (root / "shared.txt").read_text() != "js: hello\npy!":
                await anyio.sleep(0.05)
