"""With ``auto_push=False`` / ``auto_pull=False``, changes move only on ``push()`` / ``pull()``.

A presence change sent after an edit travels the same path behind it, so once the other
side sees the presence, it would have seen the edit too had it been sent (or applied).
"""

from __future__ import annotations

import pytest

from jupyter_rooms import connect

from helpers import roots, serving, settle

pytestmark = pytest.mark.anyio

WIRES = ["memory", "websocket"]


@pytest.mark.parametrize("wire", WIRES)
async def test_nothing_leaves_until_push(wire: str) -> None:
    async with (
        serving(wire) as (server, options),
        connect(wire, id="doc", auto_push=False, **options) as writer,
        connect(wire, id="doc", **options) as reader,
    ):
        room = server.room_manager.rooms["doc"]
        text = roots(writer.doc)[0]
        text += "draft"
        roots(writer.doc)[1]["title"] = "notes"
        writer.awareness.set_local_state({"step": 1})
        await settle(lambda: reader.awareness.states.get(writer.awareness.client_id) == {"step": 1})
        assert reader.awareness.states[writer.awareness.client_id] == {"step": 1}
        assert str(roots(room.doc)[0]) == str(roots(reader.doc)[0]) == ""
        assert "title" not in roots(reader.doc)[1]

        await writer.push()
        # push() returns once the changes are sent; they arrive soon after.
        await settle(lambda: str(roots(reader.doc)[0]) == "draft")
        assert str(roots(reader.doc)[0]) == str(roots(room.doc)[0]) == "draft"
        assert roots(reader.doc)[1]["title"] == "notes"

        # Changes made after a push wait for the next one.
        text += "!"
        writer.awareness.set_local_state({"step": 2})
        await settle(lambda: reader.awareness.states.get(writer.awareness.client_id) == {"step": 2})
        assert str(roots(reader.doc)[0]) == "draft"
        await writer.push()
        await settle(lambda: str(roots(reader.doc)[0]) == "draft!")
        assert str(roots(reader.doc)[0]) == "draft!"

        # The writer still receives the others' changes as they come.
        roots(reader.doc)[0].insert(0, ">")
        await settle(lambda: str(text) == ">draft!")
        assert str(text) == ">draft!"


@pytest.mark.parametrize("wire", WIRES)
async def test_nothing_arrives_until_pull(wire: str) -> None:
    async with serving(wire) as (server, options):
        async with connect(wire, id="doc", **options) as writer:
            roots(writer.doc)[0].insert(0, "before ")
            async with connect(wire, id="doc", auto_pull=False, **options) as reader:
                text = roots(reader.doc)[0]
                assert str(text) == ""
                roots(writer.doc)[0].insert(7, "after")
                writer.awareness.set_local_state({"edited": True})
                await settle(lambda: writer.awareness.client_id in reader.awareness.states)
                assert reader.awareness.states[writer.awareness.client_id] == {"edited": True}
                assert str(text) == ""

                await reader.pull()
                assert str(text) == "before after"

                # Pulling again with nothing new changes nothing; the reader's own edits
                # still leave at once.
                await reader.pull()
                assert str(text) == "before after"
                text += "."
                await settle(lambda: str(roots(writer.doc)[0]) == "before after.")
                assert str(roots(writer.doc)[0]) == "before after."
                assert str(roots(server.room_manager.rooms["doc"].doc)[0]) == "before after."


@pytest.mark.parametrize("wire", WIRES)
async def test_push_and_pull_together(wire: str) -> None:
    async with (
        serving(wire) as (server, options),
        connect(wire, id="doc", auto_push=False, auto_pull=False, **options) as a,
        connect(wire, id="doc", auto_push=False, auto_pull=False, **options) as b,
    ):
        roots(a.doc)[2].append("from a")
        roots(b.doc)[2].append("from b")
        await a.push()
        await b.push()
        room = server.room_manager.rooms["doc"]
        await settle(lambda: len(roots(room.doc)[2]) == 2)
        assert sorted(roots(room.doc)[2].to_py()) == ["from a", "from b"]
        # Each has pushed but neither has pulled: both still see only their own change.
        b.awareness.set_local_state({"pushed": True})
        a.awareness.set_local_state({"pushed": True})
        await settle(lambda: b.awareness.client_id in a.awareness.states)
        await settle(lambda: a.awareness.client_id in b.awareness.states)
        assert roots(a.doc)[2].to_py() == ["from a"]
        assert roots(b.doc)[2].to_py() == ["from b"]
        await a.pull()
        await b.pull()
        assert roots(a.doc)[2].to_py() == roots(b.doc)[2].to_py() == roots(room.doc)[2].to_py()
