"""Rooms kept in update logs by a standalone server."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycrdt import Doc, Text

from jupyter_rooms import bind, connect
from jupyter_rooms.logroom import LogRoom, log_path
from jupyter_rooms.updatelog import UpdateLog

from helpers import free_port, wait_until

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("room_id", ["notes", "../escape", "/etc/passwd", "a/b c", ""])
async def test_rooms_survive_a_restart_and_stay_in_their_directory(
    tmp_path: Path, room_id: str
) -> None:
    store = tmp_path / "store"
    for round_ in range(2):
        async with (
            bind("websocket", room_factory=LogRoom.factory(store)) as server,
            connect("websocket", id=room_id, port=server.port) as client,
        ):
            text = client.doc.get("text", type=Text)
            if round_ == 0:
                text += "kept"
                await wait_until(
                    lambda: (
                        str(server.room_manager.rooms[room_id].doc.get("text", type=Text)) == "kept"
                    )
                )
            else:
                assert str(text) == "kept"
    files = list(store.iterdir())
    assert files == [log_path(store, room_id)]
    assert files[0].parent == store


async def test_leaving_while_disconnected_delivers_after_reconnecting(tmp_path: Path) -> None:
    port = free_port()
    factory = LogRoom.factory(tmp_path)
    first = bind("websocket", port=port, room_factory=factory)
    await first.__aenter__()
    client = await connect("websocket", id="r", port=port, max_backoff=0.2).start()
    await first.__aexit__(None, None, None)
    await wait_until(lambda: not client.connected)

    client.doc.get("text", type=Text).insert(0, "written offline")
    async with bind("websocket", port=port, room_factory=factory):
        # Leaving waits for the next connection and delivers the change.
        await client.stop()
    doc = Doc()
    for update in UpdateLog(log_path(tmp_path, "r")).load().updates:
        doc.apply_update(update)
    assert str(doc.get("text", type=Text)) == "written offline"
