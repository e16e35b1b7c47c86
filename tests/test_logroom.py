"""Rooms kept in update logs by a standalone server."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycrdt import Text

from jupyter_rooms import bind, connect
from jupyter_rooms.logroom import LogRoom, log_path

from .utils import wait_until

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
