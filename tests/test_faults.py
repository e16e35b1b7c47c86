"""Bad input and faults: a client that sends a malformed message, or stops reading, is
disconnected with a reason; the room and everyone else carry on untouched."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Awareness, Doc, Map, Text
from tornado.websocket import WebSocketClientConnection, websocket_connect

from jupyter_rooms import Channel, ClientWire, Room, ServerWire, connect
from jupyter_rooms.channel import memory_channel_pair
from jupyter_rooms.protocol import awareness_message, sync_step1, sync_step2, sync_update
from jupyter_rooms.websocket import ClientChannel

from helpers import (
    INPUTS_TRIED,
    RawPeer,
    capture_logs,
    content,
    edit_randomly,
    roots,
    serving,
    settle,
)

pytestmark = pytest.mark.anyio


def _var_uint(num: int) -> bytes:
    out = bytearray()
    while num > 0x7F:
        out.append(0x80 | (num & 0x7F))
        num >>= 7
    out.append(num)
    return bytes(out)


def _with_length(payload: bytes) -> bytes:
    return _var_uint(len(payload)) + payload


def _sample_update() -> bytes:
    doc = Doc()
    doc["text"] = text = Text("hello world")
    doc["map"] = Map({"a": 1, "b": "two", "c": [1, 2]})
    doc["array"] = Array([1, "x", True])
    text.insert(5, ",")
    del text[0:1]
    return doc.get_update()


SAMPLE_UPDATE = _sample_update()
SAMPLE_STATE = Doc().get_state()
# One entry of an awareness update: client id, clock, JSON state.
SAMPLE_ENTRY = _var_uint(424242) + _var_uint(3) + _with_length(b'{"user":"ghost"}')
SAMPLE_AWARENESS = _var_uint(1) + SAMPLE_ENTRY
VALID_MESSAGES = [
    sync_step1(SAMPLE_STATE),
    sync_step2(SAMPLE_UPDATE),
    sync_update(SAMPLE_UPDATE),
    awareness_message(SAMPLE_AWARENESS),
]


def _refused(action: Any) -> bool:
    """Whether pycrdt refuses the input: the oracle for "malformed"."""
    try:
        action()
    except Exception:
        return True
    except BaseException as exc:  # pycrdt's Rust panics derive from BaseException
        if type(exc).__name__ == "PanicException":
            return True
        raise
    return False


def _mutated(draw: Any, data: bytes) -> bytes:
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(buffer) - 1))
        change = draw(st.sampled_from(["flip", "drop", "insert"]))
        if change == "flip":
            buffer[position] = draw(st.integers(0, 255))
        elif change == "drop" and len(buffer) > 1:
            del buffer[position]
        else:
            buffer.insert(position, draw(st.integers(0, 255)))
    return bytes(buffer)


@st.composite
def bad_update(draw: Any) -> bytes:
    if draw(st.booleans()):
        payload = draw(st.binary(max_size=40))
    else:
        payload = _mutated(draw, SAMPLE_UPDATE)
    assume(_refused(lambda: Doc().apply_update(payload)))
    return sync_update(payload) if draw(st.booleans()) else sync_step2(payload)


@st.composite
def bad_state_vector(draw: Any) -> bytes:
    payload = draw(st.binary(min_size=1, max_size=20))
    reference = Doc()
    reference["text"] = Text("content")
    assume(_refused(lambda: reference.get_update(payload)))
    return sync_step1(payload)


@st.composite
def bad_awareness(draw: Any) -> bytes:
    # Well-formed entries may come first: nothing of the message may be applied.
    good = draw(st.integers(0, 2))
    entries = b"".join(
        _var_uint(9000 + i) + _var_uint(1) + _with_length(b'{"user":"ghost"}') for i in range(good)
    )
    broken = draw(
        st.sampled_from(
            [
                _var_uint(77) + _var_uint(1) + _with_length(b"{not json"),
                _var_uint(77) + _var_uint(1) + _with_length(b"\xff\xfe"),
                _var_uint(77) + _var_uint(1) + _var_uint(50) + b'{"short"',
                _var_uint(77),
                b"",
            ]
        )
    )
    payload = _var_uint(good + 1) + entries + broken
    if draw(st.booleans()):
        payload = draw(st.binary(max_size=30))
    assume(_refused(lambda: Awareness(Doc()).apply_awareness_update(payload, "check")))
    return awareness_message(payload)


@st.composite
def truncated(draw: Any) -> bytes:
    message = draw(st.sampled_from(VALID_MESSAGES))
    return message[: draw(st.integers(0, len(message) - 1))]


@st.composite
def trailing_bytes(draw: Any) -> bytes:
    return draw(st.sampled_from(VALID_MESSAGES)) + draw(st.binary(min_size=1, max_size=8))


@st.composite
def wrong_type(draw: Any) -> bytes:
    kind = draw(st.integers(0, 300).filter(lambda t: t not in (0, 1, 2, 100)))
    if draw(st.booleans()):
        return _var_uint(kind) + draw(st.binary(max_size=10))
    step = draw(st.integers(3, 200))
    return _var_uint(0) + _var_uint(step) + _with_length(SAMPLE_UPDATE)


MALFORMED = st.one_of(
    truncated(), trailing_bytes(), wrong_type(), bad_update(), bad_state_vector(), bad_awareness()
)


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


@asynccontextmanager
async def a_room_in_use(
    wire: str,
) -> AsyncIterator[tuple[ServerWire, dict[str, Any], ClientWire, Room]]:
    """A server with a room ``fuzz`` that a well-behaved client has edited and announced
    its presence in."""
    async with serving(wire) as (server, options), connect(wire, id="fuzz", **options) as good:
        roots(good.doc)[0].insert(0, "kept")
        good.awareness.set_local_state({"user": "good"})
        room = server.room_manager.rooms["fuzz"]
        await settle(
            lambda: (
                str(roots(room.doc)[0]) == "kept"
                and good.awareness.client_id in room.awareness.states
            )
        )
        yield server, options, good, room


async def check_untouched(
    wire: str, options: dict[str, Any], good: ClientWire, room: Room, before: dict[str, Any]
) -> None:
    """The room kept its document and presence; its client still edits; a newcomer sees
    the same as before."""
    assert content(room.doc) == before
    assert set(room.awareness.states) == {good.awareness.client_id}
    assert good.connected  # type: ignore[attr-defined]
    roots(good.doc)[0].insert(4, "!")
    await settle(lambda: str(roots(room.doc)[0]) == "kept!")
    assert str(roots(room.doc)[0]) == "kept!"
    async with connect(wire, id="fuzz", **options) as newcomer:
        assert str(roots(newcomer.doc)[0]) == "kept!"
        others = set(newcomer.awareness.states) - {newcomer.awareness.client_id}
        assert others == {good.awareness.client_id}


def assert_logged(logs: Any, reason: str) -> None:
    warnings = logs.messages()
    assert any("fuzz" in line and reason in line for line in warnings), warnings


@fuzz_settings(300)
@given(bad=MALFORMED, handshake=st.booleans())
async def test_malformed_message_over_a_channel_drops_only_its_sender(
    bad: bytes, handshake: bool
) -> None:
    INPUTS_TRIED["malformed messages (memory wire)"] += 1
    async with a_room_in_use("memory") as (_, options, good, room):
        before = content(room.doc)
        client_end, server_end = memory_channel_pair("fuzz")
        peer = RawPeer(client_end)
        with capture_logs() as logs, anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(room.serve, server_end)
                if handshake:
                    await peer.sync()
                    assert str(roots(peer.doc)[0]) == "kept"
                await client_end.send(bad)
                await peer.read_until_closed()
        assert client_end.close_code == 1002
        assert client_end.close_reason.startswith("protocol error")
        assert_logged(logs, client_end.close_reason.removeprefix("protocol error: "))
        await check_untouched("memory", options, good, room, before)


@asynccontextmanager
async def raw_websocket(port: int, path: str = "fuzz") -> AsyncIterator[WebSocketClientConnection]:
    connection = await websocket_connect(f"ws://127.0.0.1:{port}/{path}")
    try:
        yield connection
    finally:
        connection.close()


@fuzz_settings(100)
@given(bad=st.one_of(MALFORMED, st.text(max_size=20)), handshake=st.booleans())
# Text whose bytes would read as well-formed messages (a RAW request, a first sync step).
@example(bad="\x02", handshake=False)
@example(bad="\x00\x00\x00", handshake=True)
async def test_malformed_message_over_a_websocket_drops_only_its_sender(
    bad: bytes | str, handshake: bool
) -> None:
    INPUTS_TRIED["malformed messages (websocket wire)"] += 1
    async with a_room_in_use("websocket") as (_, options, good, room):
        before = content(room.doc)
        with capture_logs() as logs, anyio.fail_after(5):
            async with raw_websocket(options["port"]) as connection:
                peer = RawPeer(ClientChannel(connection, "fuzz"))
                if handshake:
                    await peer.sync()
                await connection.write_message(bad, binary=isinstance(bad, bytes))
                await peer.read_until_closed()
        assert connection.close_code == 1002
        assert connection.close_reason and connection.close_reason.startswith("protocol error")
        assert_logged(logs, connection.close_reason.removeprefix("protocol error: "))
        await check_untouched("websocket", options, good, room, before)


def small_rooms(id: str) -> Room:
    # A short send queue, so that a client that stops reading is found out quickly.
    return Room(id, max_backlog=8)


async def test_stalled_client_over_a_channel_is_dropped_and_can_resync() -> None:
    async with (
        serving("memory", room_factory=small_rooms) as (server, options),
        connect("memory", id="busy", **options) as alice,
        connect("memory", id="busy", **options) as bob,
    ):
        room = server.room_manager.rooms["busy"]
        # The stalled client's channel holds one message; then the room's sends to it wait.
        client_end, server_end = memory_channel_pair("busy", max_buffer_size=1)
        stalled = RawPeer(client_end)
        async with anyio.create_task_group() as tg:
            tg.start_soon(room.serve, server_end)
            await stalled.sync()
            assert room.client_count == 3

            async with anyio.create_task_group() as editors:
                editors.start_soon(edit_randomly, alice.doc, 1, 300, "done-alice")
                editors.start_soon(edit_randomly, bob.doc, 2, 300, "done-bob")
            docs = [alice.doc, bob.doc, room.doc]
            await settle(
                lambda: (
                    all({"done-alice", "done-bob"} <= set(roots(d)[1].keys()) for d in docs)
                    and content(alice.doc) == content(bob.doc) == content(room.doc)
                )
            )
            assert content(alice.doc) == content(bob.doc) == content(room.doc)
            assert room.client_count == 2

            with anyio.fail_after(5):
                await stalled.read_until_closed()
        assert client_end.close_code == 4008
        assert "too slow" in client_end.close_reason
        assert content(stalled.doc) != content(room.doc)

        # It reconnects with what it has, and the handshake brings the rest.
        client_end, server_end = memory_channel_pair("busy")
        again = RawPeer(client_end, doc=stalled.doc)
        async with anyio.create_task_group() as tg:
            tg.start_soon(room.serve, server_end)
            with anyio.fail_after(5):
                await again.sync()
            assert content(stalled.doc) == content(room.doc)
            await client_end.close()


async def test_a_memory_client_that_stops_reading_is_dropped() -> None:
    # What the room sends a memory client waits in a bounded buffer too: one that stops
    # reading is found out, rather than held in memory without end.
    async with (
        serving("memory", room_factory=small_rooms) as (server, options),
        connect("memory", id="busy", **options) as alice,
    ):
        stalled = RawPeer(server.accept("busy"))  # type: ignore[attr-defined]
        with anyio.fail_after(5):
            await stalled.sync()
        room = server.room_manager.rooms["busy"]
        await settle(lambda: room.client_count == 2)
        text = roots(alice.doc)[0]
        with anyio.fail_after(10):
            while room.client_count == 2:
                text += "x"
                await anyio.lowlevel.checkpoint()
        assert room.client_count == 1
        with anyio.fail_after(5):
            await stalled.read_until_closed()
        assert stalled.channel.close_code == 4008  # type: ignore[attr-defined]


async def test_stalled_client_over_a_websocket_is_dropped_and_can_resync() -> None:
    async with (
        serving("websocket", room_factory=small_rooms) as (server, options),
        connect("websocket", id="busy", **options) as alice,
        connect("websocket", id="busy", **options) as bob,
        raw_websocket(options["port"], "busy") as connection,
    ):
        room = server.room_manager.rooms["busy"]
        stalled = RawPeer(ClientChannel(connection, "busy"))
        with anyio.fail_after(5):
            await stalled.sync()
        await settle(lambda: room.client_count == 3)
        assert room.client_count == 3

        # Big edits, so that the stalled socket's buffers fill up; the others go on.
        rng = random.Random(5)
        chunk = "".join(rng.choice("abcdefgh \n") for _ in range(20_000))
        texts = [roots(alice.doc)[0], roots(bob.doc)[0]]
        rounds = 0
        with anyio.fail_after(30):
            while room.client_count == 3:
                for text in texts:
                    text.insert(rng.randint(0, len(text)), chunk[: rng.randint(100, 20_000)])
                rounds += 1
                await settle(lambda: content(alice.doc) == content(bob.doc) == content(room.doc))
                assert content(alice.doc) == content(bob.doc) == content(room.doc)
        # The others still edit, and converge.
        roots(alice.doc)[1]["after"] = "the drop"
        await settle(lambda: roots(bob.doc)[1].get("after") == "the drop")
        assert content(alice.doc) == content(bob.doc) == content(room.doc)

        with anyio.fail_after(10):
            await stalled.read_until_closed()
        assert connection.close_code == 4008, (connection.close_code, connection.close_reason)
        assert "too slow" in (connection.close_reason or "")
        assert content(stalled.doc) != content(room.doc)

        async with raw_websocket(options["port"], "busy") as connection_again:
            again = RawPeer(ClientChannel(connection_again, "busy"), doc=stalled.doc)
            with anyio.fail_after(10):
                await again.sync()
            assert content(stalled.doc) == content(room.doc)
        assert rounds > 1


class RecordingRoom(Room):
    """A room that remembers its clients' channels, so a test can act on one."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.channels: list[Channel] = []

    async def serve(self, client: Channel, **kwargs: Any) -> None:
        self.channels.append(client)
        await super().serve(client, **kwargs)


@pytest.mark.parametrize("wire", ["memory", "websocket"])
async def test_client_dropped_as_too_slow_reconnects_and_resyncs(wire: str) -> None:
    async with (
        serving(wire, room_factory=RecordingRoom) as (server, options),
        connect(wire, id="busy", **options) as alice,
        connect(wire, id="busy", **options) as bob,
    ):
        statuses: list[tuple[str, Any]] = []
        bob.on_status(lambda status, details: statuses.append((status, details)))  # type: ignore[attr-defined]
        room = server.room_manager.rooms["busy"]
        assert isinstance(room, RecordingRoom)
        room.disconnect(room.channels[1], 4008, "client too slow")
        roots(alice.doc)[0].insert(0, "while away")
        roots(bob.doc)[0].insert(0, "offline ")
        await settle(lambda: content(alice.doc) == content(bob.doc) == content(room.doc))
        assert content(alice.doc) == content(bob.doc) == content(room.doc)
        assert str(roots(room.doc)[0]) in ("offline while away", "while awayoffline ")
        assert ("disconnected", {"code": 4008, "reason": "client too slow"}) in statuses
        assert statuses[-1][0] == "synchronized"
        assert len(room.channels) == 3


def test_generators_start_from_valid_samples() -> None:
    # The malformed inputs are built from these; they must be accepted as they are.
    Awareness(Doc()).apply_awareness_update(SAMPLE_AWARENESS, "check")
    Doc().apply_update(SAMPLE_UPDATE)
