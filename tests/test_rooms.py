"""Rooms as a server keeps them: opened by the first client, closed after the last, built
by a ``room_factory`` that can give them work of their own; and wires that are missing."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus
from pycrdt import Doc, Text
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets
from tornado.web import Application
from tornado.websocket import WebSocketHandler, websocket_connect

from jupyter_rooms import Room, UnknownWireError, bind, connect
from jupyter_rooms.channel import memory_channel_pair
from jupyter_rooms.protocol import MessageType, SyncType, parse_message, sync_step1, sync_update
from jupyter_rooms.room import CloseCode
from jupyter_rooms.websocket import (
    _FRAGMENT,
    _RECEIVE_BUFFER,
    HandlerChannel,
    write_large_message,
)

from helpers import capture_logs, content, edit_randomly, other_tasks, roots, serving, settle

pytestmark = pytest.mark.anyio

WIRES = ["memory", "websocket"]


@pytest.mark.parametrize("wire", WIRES)
async def test_room_closes_when_its_last_client_leaves(wire: str) -> None:
    async with serving(wire) as (server, options):
        manager = server.room_manager
        async with connect(wire, id="a", **options) as first:
            async with connect(wire, id="a", **options):
                assert list(manager.rooms) == ["a"]
                assert manager.has("a") and not manager.has("b")
                assert manager.client_count("a") == 2
                roots(first.doc)[0].insert(0, "kept while someone is here")
            # One client left, one remains: the room stays.
            await settle(lambda: manager.client_count("a") == 1)
            assert manager.client_count("a") == 1
            assert list(manager.rooms) == ["a"]
        await settle(lambda: not manager.rooms, timeout=2)
        await settle(lambda: not manager.has("a"), timeout=2)
        assert not manager.rooms and not manager.has("a")
        # The room's document went with it: a newcomer starts from an empty one.
        async with connect(wire, id="a", **options) as newcomer:
            assert str(roots(newcomer.doc)[0]) == ""


@pytest.mark.parametrize("wire", WIRES)
async def test_room_outlives_its_last_client_by_cleanup_delay(wire: str) -> None:
    delay = 0.5
    async with serving(wire, cleanup_delay=delay) as (server, options):
        manager = server.room_manager
        async with connect(wire, id="a", **options) as first:
            roots(first.doc)[0].insert(0, "still here")
            room = manager.rooms["a"]

        # A client arriving within the delay finds the same room, document and all.
        async with connect(wire, id="a", **options) as second:
            assert manager.rooms["a"] is room
            assert str(roots(second.doc)[0]) == "still here"
            roots(second.doc)[0].insert(0, "I am ")
        left = time.monotonic()
        await settle(lambda: "a" not in manager.rooms, timeout=delay + 2)
        waited = time.monotonic() - left
        assert "a" not in manager.rooms
        # The delay counts from the last departure, not from the first one.
        assert waited >= delay * 0.9
        async with connect(wire, id="a", **options) as third:
            assert manager.rooms["a"] is not room
            assert str(roots(third.doc)[0]) == ""


def count_encodings(monkeypatch: pytest.MonkeyPatch, doc: Doc) -> list[bytes | None]:
    """Record each encoding of ``doc`` as an update (the state it was encoded against)."""
    encoded: list[bytes | None] = []
    get_update = Doc.get_update

    def counted(self: Doc, state: bytes | None = None) -> bytes:
        if self is doc:
            encoded.append(state)
        return get_update(self, state)

    monkeypatch.setattr(Doc, "get_update", counted)
    return encoded


async def test_clients_joining_between_changes_share_one_encoding_of_the_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A document is encoded once for everyone who joins with nothing of it; a change as
    # large as an eighth of it has it encoded afresh.
    async with serving("memory", cleanup_delay=5.0) as (server, options):
        async with connect("memory", id="a", **options) as first:
            roots(first.doc)[0].insert(0, "hello")
            room = server.room_manager.rooms["a"]
            await settle(lambda: str(roots(room.doc)[0]) == "hello")
            encoded = count_encodings(monkeypatch, room.doc)
            for _ in range(3):
                async with connect("memory", id="a", **options) as joiner:
                    assert str(roots(joiner.doc)[0]) == "hello"
            assert len(encoded) == 1
            roots(first.doc)[0].insert(5, " world")
            await settle(lambda: str(roots(room.doc)[0]) == "hello world")
            async with connect("memory", id="a", **options) as joiner:
                assert str(roots(joiner.doc)[0]) == "hello world"
            assert len(encoded) == 2


async def test_joiners_get_small_changes_after_the_encoded_document_and_are_whole_at_sync(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small changes to a large document follow its one encoding (sent before it, so that
    # a client is whole once its first sync is over); changes that add up to an eighth of
    # it have it encoded afresh.
    large = "".join(f"line {i}\n" for i in range(20_000))
    async with serving("memory", cleanup_delay=5.0) as (server, options):
        async with connect("memory", id="a", **options) as first:
            text = roots(first.doc)[0]
            text.insert(0, large)
            room = server.room_manager.rooms["a"]
            await settle(lambda: len(str(roots(room.doc)[0])) == len(large))
            encoded = count_encodings(monkeypatch, room.doc)
            expected = large
            for i in range(5):
                text.insert(0, f"edit {i} ")
                del text[len(text) - 3 :]
                expected = f"edit {i} " + expected[:-3]
                await settle(lambda want=expected: str(roots(room.doc)[0]) == want)
                async with connect("memory", id="a", **options) as joiner:
                    assert str(roots(joiner.doc)[0]) == expected
            # What a client receives until the reply to its first sync makes the whole
            # document: the changes come before the reply.
            client_end, server_end = memory_channel_pair("a")
            room.task_group.start_soon(room.serve, server_end)
            await client_end.send(sync_step1(b"\x00"))
            received = Doc()
            while True:
                message = parse_message(await client_end.recv())
                if message.type == MessageType.SYNC and message.sync_type != SyncType.STEP1:
                    received.apply_update(message.payload)
                    if message.sync_type == SyncType.STEP2:
                        break
            assert str(received.get("text", type=Text)) == expected
            await client_end.close()
            assert len(encoded) == 1
            text.insert(0, "x" * (len(large) // 4))
            expected = "x" * (len(large) // 4) + expected
            await settle(lambda: str(roots(room.doc)[0]) == expected)
            async with connect("memory", id="a", **options) as joiner:
                assert str(roots(joiner.doc)[0]) == expected
            assert len(encoded) == 2


async def test_rooms_are_separate() -> None:
    async with serving("memory") as (server, options):
        async with (
            connect("memory", id="one", **options) as one,
            connect("memory", id="two", **options) as two,
            connect("memory", id="one", **options) as one_again,
        ):
            roots(one.doc)[0].insert(0, "for one")
            roots(two.doc)[0].insert(0, "for two")
            await settle(lambda: str(roots(one_again.doc)[0]) == "for one")
            assert str(roots(one_again.doc)[0]) == "for one"
            assert set(server.room_manager.rooms) == {"one", "two"}
            assert str(roots(server.room_manager.rooms["two"].doc)[0]) == "for two"
            assert str(roots(two.doc)[0]) == "for two"


class RelayedRoom(Room):
    """A room whose document is also a client of the same room on an upstream server."""

    upstream_port = 0

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        relay_ready = anyio.Event()
        self.task_group.start_soon(self._relay, relay_ready)
        await relay_ready.wait()
        await super().run(task_status=task_status)

    async def _relay(self, ready: anyio.Event) -> None:
        async with connect("websocket", id=self.id, doc=self.doc, port=self.upstream_port):
            ready.set()
            await anyio.sleep_forever()


@asynccontextmanager
async def relayed_server(upstream_port: int) -> AsyncIterator[tuple[object, int]]:
    def factory(id: str) -> Room:
        room = RelayedRoom(id)
        room.upstream_port = upstream_port
        return room

    async with bind("websocket", room_factory=factory, host="127.0.0.1") as server:
        yield server, server.port  # type: ignore[attr-defined]


async def test_room_factory_rooms_relay_through_a_third_server() -> None:
    baseline = other_tasks()
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(bind("websocket", host="127.0.0.1"))
        hub_port = hub.port  # type: ignore[attr-defined]
        server_a, port_a = await stack.enter_async_context(relayed_server(hub_port))
        server_b, port_b = await stack.enter_async_context(relayed_server(hub_port))
        on_a = await stack.enter_async_context(connect("websocket", id="team", port=port_a))
        on_b = await stack.enter_async_context(connect("websocket", id="team", port=port_b))
        also_on_a = await stack.enter_async_context(connect("websocket", id="team", port=port_a))

        room_a = server_a.room_manager.rooms["team"]  # type: ignore[attr-defined]
        room_b = server_b.room_manager.rooms["team"]  # type: ignore[attr-defined]
        assert isinstance(room_a, RelayedRoom) and isinstance(room_b, RelayedRoom)
        # The hub sees one client per relaying server, not the end users.
        assert hub.room_manager.client_count("team") == 2

        clients = [on_a, on_b, also_on_a]
        async with anyio.create_task_group() as tg:
            for i, client in enumerate(clients):
                tg.start_soon(edit_randomly, client.doc, 7 + i, 40, f"done-{i}")
        docs = [c.doc for c in clients] + [
            room_a.doc,
            room_b.doc,
            hub.room_manager.rooms["team"].doc,
        ]
        markers = {f"done-{i}" for i in range(len(clients))}
        await settle(
            lambda: (
                all(markers <= set(roots(d)[1].keys()) for d in docs)
                and all(content(d) == content(docs[0]) for d in docs)
            )
        )
        expected = content(docs[0])
        assert markers <= set(expected["map"])
        for doc in docs:
            assert content(doc) == expected
    # The relays were the rooms' own work: they stopped with them.
    await settle(lambda: not (other_tasks() - baseline), timeout=2)
    assert other_tasks() - baseline == set()


async def test_a_room_closing_stops_its_relay() -> None:
    async with bind("websocket", host="127.0.0.1") as hub:
        async with relayed_server(hub.port) as (server, port):  # type: ignore[attr-defined]
            async with connect("websocket", id="r", port=port) as client:
                roots(client.doc)[0].insert(0, "relayed")
                await settle(lambda: "r" in hub.room_manager.rooms)
                hub_room = hub.room_manager.rooms["r"]
                await settle(lambda: str(roots(hub_room.doc)[0]) == "relayed")
                assert str(roots(hub_room.doc)[0]) == "relayed"
            # The relayed room closed with its last client, and its relay left the hub.
            await settle(lambda: not hub.room_manager.rooms, timeout=5)
            assert not server.room_manager.rooms  # type: ignore[attr-defined]
            assert not hub.room_manager.rooms


@pytest.mark.parametrize("side", ["bind", "connect"])
async def test_unknown_wire_names_it_and_what_to_install(side: str) -> None:
    with pytest.raises(UnknownWireError) as info:
        if side == "bind":
            bind("carrier-pigeon")
        else:
            connect("carrier-pigeon", id="x")
    message = str(info.value)
    assert "'carrier-pigeon'" in message
    assert "install" in message
    # It lists what is installed, so a typo is easy to spot.
    assert "memory" in message and "websocket" in message


async def test_a_wire_another_package_declares_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A package installed beside jupyter_rooms that declares a wire's two entry points.
    (tmp_path / "pigeon_wire.py").write_text(
        textwrap.dedent(
            """
            from jupyter_rooms.wires.memory import MemoryClient, MemoryServer

            class PigeonServer(MemoryServer):
                pass

            class PigeonClient(MemoryClient):
                pass
            """
        )
    )
    info = tmp_path / "pigeon_wire-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pigeon-wire\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[jupyter_rooms.wires]\n"
        "pigeon_server = pigeon_wire:PigeonServer\n"
        "pigeon_client = pigeon_wire:PigeonClient\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    async with bind("pigeon") as server:
        assert type(server).__name__ == "PigeonServer"
        async with (
            connect("pigeon", id="coop", server=server) as a,
            connect("pigeon", id="coop", server=server) as b,
        ):
            assert type(a).__name__ == "PigeonClient"
            roots(a.doc)[0].insert(0, "coo")
            await settle(lambda: str(roots(b.doc)[0]) == "coo")
            assert str(roots(b.doc)[0]) == "coo"


async def test_unknown_wire_from_an_extra_names_the_extra() -> None:
    with pytest.raises(UnknownWireError, match=r"jupyter_rooms\[redis\]"):
        connect("redis", id="x")


@pytest.mark.parametrize("wire", WIRES)
async def test_server_stops_promptly_while_a_room_waits_for_cleanup(wire: str) -> None:
    with anyio.fail_after(5):
        async with serving(wire, cleanup_delay=60) as (server, options):
            async with connect(wire, id="a", **options):
                pass
            await settle(lambda: server.room_manager.client_count("a") == 0)
            assert "a" in server.room_manager.rooms


class FragileRoom(Room):
    """A room whose own work fails once, when the test says so."""

    failures: ClassVar[list[str]] = []
    fail_now: ClassVar[anyio.Event]

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        if self.id == "fragile" and not self.failures:
            self.task_group.start_soon(self._fail)
        await super().run(task_status=task_status)

    async def _fail(self) -> None:
        await self.fail_now.wait()
        self.failures.append(self.id)
        raise RuntimeError("lost its file")


@pytest.mark.parametrize("wire", WIRES)
async def test_a_failing_room_closes_alone(wire: str) -> None:
    FragileRoom.failures = []
    FragileRoom.fail_now = anyio.Event()
    with capture_logs() as logs:
        async with (
            serving(wire, room_factory=FragileRoom) as (server, options),
            connect(wire, id="sturdy", **options) as sturdy,
            connect(wire, id="fragile", **options) as fragile,
        ):
            roots(fragile.doc)[0].insert(0, "mine")
            failed_room = server.room_manager.rooms["fragile"]
            await settle(lambda: str(roots(failed_room.doc)[0]) == "mine")
            FragileRoom.fail_now.set()
            # The failed room is replaced; its client comes back and brings its document.
            await settle(
                lambda: (
                    server.room_manager.rooms.get("fragile") not in (None, failed_room)
                    and str(roots(server.room_manager.rooms["fragile"].doc)[0]) == "mine"
                )
            )
            assert FragileRoom.failures == ["fragile"]
            assert str(roots(server.room_manager.rooms["fragile"].doc)[0]) == "mine"
            # The other room carried on as if nothing happened.
            assert sturdy.connected  # type: ignore[attr-defined]
            roots(sturdy.doc)[0].insert(0, "unaffected")
            sturdy_room = server.room_manager.rooms["sturdy"]
            await settle(lambda: str(roots(sturdy_room.doc)[0]) == "unaffected")
            assert str(roots(sturdy_room.doc)[0]) == "unaffected"
    assert any("lost its file" in str(r.exc_info) for r in logs.records if r.exc_info)


@pytest.mark.parametrize("size", [_FRAGMENT - 40, _FRAGMENT + 40, 2 * _FRAGMENT + 1000])
async def test_large_documents_reach_a_joiner_over_a_websocket_whole(size: int) -> None:
    # Around the size from which the room's socket writes a message in fragments: the
    # joiner's sync reply is about ``size`` bytes.
    text = "".join(chr(0x61 + i % 26) for i in range(size))
    async with (
        serving("websocket") as (server, options),
        connect("websocket", id="big", **options) as first,
    ):
        roots(first.doc)[0].insert(0, text)
        room = server.room_manager.rooms["big"]
        await settle(lambda: len(str(roots(room.doc)[0])) == size)
        for _ in range(2):
            async with connect("websocket", id="big", **options) as joiner:
                assert str(roots(joiner.doc)[0]) == text
                roots(joiner.doc)[0].insert(0, "!")
                await settle(lambda: str(roots(first.doc)[0]).startswith("!"))
                assert str(roots(first.doc)[0]).startswith("!")
            text = "!" + text


@pytest.mark.parametrize("id", ["notes/week 1.md", "ça va?#1", "a%20b", ""])
async def test_any_room_id_reaches_its_own_room_over_a_websocket(id: str) -> None:
    async with (
        serving("websocket") as (server, options),
        connect("websocket", id=id, **options) as first,
        connect("websocket", id=id, **options) as second,
        connect("websocket", id=id + "x", **options) as elsewhere,
    ):
        roots(first.doc)[0].insert(0, "hello")
        await settle(lambda: str(roots(second.doc)[0]) == "hello")
        assert str(roots(second.doc)[0]) == "hello"
        assert set(server.room_manager.rooms) == {id, id + "x"}
        assert str(roots(server.room_manager.rooms[id].doc)[0]) == "hello"
        assert str(roots(elsewhere.doc)[0]) == ""


def typed_updates(typed: str) -> list[bytes]:
    """The updates of typing ``typed`` into a text, one character each."""
    source = Doc()
    text = source.get("text", type=Text)
    updates: list[bytes] = []
    source.observe(lambda event: updates.append(event.update))
    for char in typed:
        text += char
    return updates


async def test_a_backlog_of_updates_is_applied_as_one_change() -> None:
    updates = typed_updates("backlog")
    client_end, server_end = memory_channel_pair("r")
    # Everything the client sent waits before the room reads any of it.
    for update in updates:
        await client_end.send(sync_update(update))
    async with Room("r") as room:
        await room.task_group.start(room.run)
        changes: list[bytes] = []
        room.doc.observe(lambda event: changes.append(event.update))
        room.task_group.start_soon(room.serve, server_end)
        await settle(lambda: str(room.doc.get("text", type=Text)) == "backlog")
        assert str(room.doc.get("text", type=Text)) == "backlog"
        assert len(changes) == 1
        room.task_group.cancel_scope.cancel()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(sync_update(b"\x01\x02\x03garbage"), id="garbage-update"),
        pytest.param(sync_update(b"\x01\x02\x03garbage")[:-3], id="truncated"),
        pytest.param(b"\x07\x00", id="unknown-type"),
    ],
)
async def test_a_malformed_message_in_a_backlog_keeps_the_updates_before_it(bad: bytes) -> None:
    updates = typed_updates("kept")
    client_end, server_end = memory_channel_pair("r")
    for update in updates:
        await client_end.send(sync_update(update))
    await client_end.send(bad)
    async with Room("r") as room:
        await room.task_group.start(room.run)
        await room.serve(server_end)
        assert str(room.doc.get("text", type=Text)) == "kept"
        assert client_end.close_code == CloseCode.PROTOCOL_ERROR


def _masked_binary_frame(payload: bytes) -> bytes:
    # A client's frame, masked with a zero key (so the payload reads as is).
    assert len(payload) < 126
    return bytes((0x82, 0x80 | len(payload))) + b"\0\0\0\0" + payload


async def test_a_burst_read_from_a_websocket_at_once_is_applied_as_one_change() -> None:
    updates = typed_updates("one read")
    async with serving("websocket") as (server, options):
        url = f"ws://127.0.0.1:{options['port']}/burst"
        connection = await websocket_connect(url)
        try:
            await settle(lambda: "burst" in server.room_manager.rooms)
            room = server.room_manager.rooms["burst"]
            changes: list[bytes] = []
            room.doc.observe(lambda event: changes.append(event.update))
            # Every frame in one write: the server reads them all before the room runs.
            assert connection.protocol is not None and connection.protocol.stream is not None
            frames = b"".join(_masked_binary_frame(sync_update(u)) for u in updates)
            await connection.protocol.stream.write(frames)
            await settle(lambda: str(room.doc.get("text", type=Text)) == "one read")
            assert str(room.doc.get("text", type=Text)) == "one read"
            assert len(changes) == 1
        finally:
            connection.close()


class _Exposed(WebSocketHandler):
    """A socket whose channel the test drives itself."""

    def open(self) -> None:
        self.channel = HandlerChannel(self, "r")
        self.settings["opened"].append(self)


@asynccontextmanager
async def exposed_socket() -> AsyncIterator[tuple[Any, _Exposed]]:
    """A client's connection to a server socket, and the server's handler."""
    opened: list[_Exposed] = []
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(Application([("/", _Exposed)], opened=opened))
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    client = await websocket_connect(f"ws://127.0.0.1:{port}/", max_message_size=2**26)
    try:
        await settle(lambda: bool(opened))
        yield client, opened[0]
    finally:
        client.close()
        server.stop()


def large_message(fragments: int) -> bytes:
    return bytes(range(256)) * (fragments * _FRAGMENT // 256 - 3)


async def test_a_large_message_is_written_in_fragments_with_the_loop_free_between_them() -> None:
    async with exposed_socket() as (client, handler):
        message = large_message(4)
        written = write_large_message(handler.ws_connection, message)
        assert written is not None
        # Other work runs before the last fragment is written.
        seen: list[bool] = []
        asyncio.get_running_loop().call_soon(lambda: seen.append(written.done()))
        await written
        assert seen == [False]
        assert await client.read_message() == message


async def test_each_fragment_goes_to_the_socket_in_one_write() -> None:
    # Every write to the socket lets other threads take the interpreter, and getting it
    # back can take the switch interval: a fragment's header is not written apart.
    async with exposed_socket() as (client, handler):
        stream = handler.ws_connection.stream
        writes: list[int] = []
        write = stream.write

        def counted(data: bytes | memoryview) -> Any:
            writes.append(len(data))
            return write(data)

        stream.write = counted
        message = large_message(3) + b"tail"
        written = write_large_message(handler.ws_connection, message)
        assert written is not None
        await written
        sizes = [_FRAGMENT, _FRAGMENT, len(message) - 2 * _FRAGMENT]
        assert writes == [10 + size for size in sizes]
        assert await client.read_message() == message


async def test_nothing_comes_between_the_fragments_of_a_large_message() -> None:
    async with exposed_socket() as (client, handler):
        channel = handler.channel
        message = large_message(6)
        assert channel.send_nowait(message)
        # Until the fragments are written, the room queues what comes next.
        assert not channel.send_nowait(b"next")
        await channel.send(b"next")
        assert channel.send_nowait(b"last")
        assert await client.read_message() == message
        assert await client.read_message() == b"next"
        assert await client.read_message() == b"last"


async def test_a_sender_cancelled_during_a_large_message_leaves_the_socket_whole() -> None:
    async with exposed_socket() as (client, handler):
        channel = handler.channel
        message = large_message(6)
        sending = asyncio.ensure_future(channel.send(message))
        await asyncio.sleep(0)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        # The message is written whole all the same, and what follows comes after it.
        await channel.send(b"next")
        assert await client.read_message() == message
        assert await client.read_message() == b"next"


async def test_a_socket_closed_during_a_large_message_gets_no_more_of_it() -> None:
    async with exposed_socket() as (client, handler):
        written = write_large_message(handler.ws_connection, large_message(5))
        assert written is not None
        handler.close(1001, "going away")
        with pytest.raises(StreamClosedError):
            await written
        # The client sees the close, not a message.
        assert await client.read_message() is None
        assert client.close_code == 1001


class _Handler:
    def __init__(self) -> None:
        self.closed_with: tuple[int, str] | None = None

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


async def test_a_full_inbox_makes_the_socket_wait_until_the_room_catches_up() -> None:
    channel = HandlerChannel(_Handler(), "r")
    waits = [channel.feed(bytes([index % 256])) for index in range(_RECEIVE_BUFFER)]
    # Messages go in without waiting until the inbox is full.
    assert waits[:-1] == [None] * (_RECEIVE_BUFFER - 1)
    full = waits[-1]
    assert full is not None
    released = anyio.Event()

    async def wait_for_space() -> None:
        await full
        released.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_for_space)
        await anyio.wait_all_tasks_blocked()
        assert not released.is_set()
        for _ in range(_RECEIVE_BUFFER // 2):
            await channel.recv()
        await released.wait()
    assert channel.recv_nowait() == bytes([(_RECEIVE_BUFFER // 2) % 256])


async def test_a_closed_socket_ends_the_channel_after_what_it_received() -> None:
    channel = HandlerChannel(_Handler(), "r")
    assert channel.feed(b"a") is None
    assert channel.feed("b") is None
    channel.closed(1001, "gone")
    assert channel.feed(b"late") is None
    assert [message async for message in channel] == [b"a", b"b"]
    assert channel.close_code == 1001


async def test_closing_the_channel_releases_a_socket_waiting_for_space() -> None:
    handler = _Handler()
    channel = HandlerChannel(handler, "r")
    full = None
    while full is None:
        full = channel.feed(b"x")
    await channel.close(4008, "too slow")
    await full
    assert handler.closed_with == (4008, "too slow")
    assert channel.recv_nowait() is None
