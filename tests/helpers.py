"""What several test modules share: waiting, random edits, and a hand-driven peer."""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
from pycrdt import Array, Doc, Map, Text
from tornado.httpclient import AsyncHTTPClient

from jupyter_rooms import ServerWire, bind
from jupyter_rooms.channel import Channel, ChannelClosed
from jupyter_rooms.protocol import (
    MessageType,
    SyncType,
    parse_message,
    sync_step1,
    sync_step2,
)

# The benchmarks' directory holds the one spelling of a local Jupyter server and of
# Chromium (localjupyter.py); appended, so that the tests' own modules come first.
sys.path.append(str(Path(__file__).resolve().parent.parent / "bench"))
from localjupyter import CHROMIUM as CHROMIUM
from localjupyter import CHROMIUM_ARGS as CHROMIUM_ARGS
from localjupyter import free_port as free_port
from localjupyter import jupyter_command as jupyter_command
from localjupyter import lab_home as lab_home

# Hostile inputs the tests tried, by kind; the run's summary prints them (conftest.py).
INPUTS_TRIED: Counter[str] = Counter()

WORDS = ("a", "bc", "def", "ghij", " ", "k\n", "lmnop", "xyz")


async def settle(predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Poll until ``predicate()`` holds or ``timeout`` passes; the caller asserts after.

    Returning instead of raising on timeout lets the caller's own assertion show what
    differs. Polling, because what the tests wait for (a document's content, another
    client's view) has no event of its own to wait on.
    """
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(0.002)


async def wait_until(predicate: Callable[[], object], *, within: float = 15.0) -> None:
    """Poll until ``predicate()`` holds; fail with ``TimeoutError`` after ``within`` seconds."""
    with anyio.fail_after(within):
        while not predicate():
            await anyio.sleep(0.005)


def roots(doc: Doc) -> tuple[Text, Map, Array]:
    """The three shared types the tests edit."""
    return doc.get("text", type=Text), doc.get("map", type=Map), doc.get("array", type=Array)


def content(doc: Doc) -> dict[str, Any]:
    """What a user reads from a document."""
    text, map_, array = roots(doc)
    return {"text": str(text), "map": map_.to_py(), "array": array.to_py()}


def random_edit(rng: random.Random, doc: Doc) -> None:
    """One random change to the document's Text, Map or Array."""
    text, map_, array = roots(doc)
    kind = rng.randrange(3)
    if kind == 0:
        size = len(text)
        if size and rng.random() < 0.3:
            start = rng.randrange(size)
            del text[start : min(size, start + rng.randint(1, 4))]
        else:
            text.insert(rng.randint(0, size), rng.choice(WORDS))
    elif kind == 1:
        key = f"k{rng.randrange(8)}"
        if key in map_ and rng.random() < 0.3:
            del map_[key]
        else:
            map_[key] = rng.choice((rng.randrange(1000), rng.choice(WORDS), [1, "two"]))
    else:
        size = len(array)
        if size and rng.random() < 0.3:
            del array[rng.randrange(size)]
        else:
            array.insert(rng.randint(0, size), rng.choice((rng.randrange(1000), "w", True)))


async def edit_randomly(doc: Doc, seed: int, count: int, marker: str) -> None:
    """Make ``count`` random transactions, yielding between them so that other editors
    interleave, then set ``marker`` in the map to say this editor is done."""
    rng = random.Random(seed)
    for _ in range(count):
        with doc.transaction():
            for _ in range(rng.randint(1, 3)):
                random_edit(rng, doc)
        await anyio.lowlevel.checkpoint()
    roots(doc)[1][marker] = True


def other_tasks() -> set[asyncio.Task[Any]]:
    """The asyncio tasks running besides the current one."""
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


class LogRecords(logging.Handler):
    """Collects the records of a logger while installed with [capture_logs]."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.WARNING) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@contextmanager
def capture_logs(name: str = "jupyter_rooms") -> Iterator[LogRecords]:
    logger = logging.getLogger(name)
    handler = LogRecords()
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


class RawPeer:
    """A client driven by hand over a channel: it speaks the protocol message by message,
    so a test decides when it reads, what it sends, and what it does with what arrives."""

    def __init__(self, channel: Channel, doc: Doc | None = None) -> None:
        self.channel = channel
        self.doc = doc if doc is not None else Doc()
        self.synced = False

    async def start(self) -> None:
        await self.channel.send(sync_step1(self.doc.get_state()))

    def handle(self, data: bytes) -> bytes | None:
        """Apply one received message; return the reply it calls for, if any."""
        message = parse_message(data)
        if message.type != MessageType.SYNC:
            return None
        if message.sync_type == SyncType.STEP1:
            return sync_step2(self.doc.get_update(message.payload))
        self.doc.apply_update(message.payload)
        if message.sync_type == SyncType.STEP2:
            self.synced = True
        return None

    async def read_until_closed(self) -> None:
        """Apply everything the server sends until it closes the channel."""
        while True:
            try:
                data = await self.channel.recv()
            except ChannelClosed:
                return
            reply = self.handle(data)
            if reply is not None:
                try:
                    await self.channel.send(reply)
                except ChannelClosed:
                    return

    async def sync(self) -> None:
        """Do the handshake and wait until the room's document has arrived."""
        await self.start()
        while not self.synced:
            reply = self.handle(await self.channel.recv())
            if reply is not None:
                await self.channel.send(reply)


@asynccontextmanager
async def serving(wire: str, **options: Any) -> AsyncIterator[tuple[ServerWire, dict[str, Any]]]:
    """Run a server of ``wire`` (on 127.0.0.1 for network wires); yield it and the options
    a client of it passes to ``connect``."""
    if wire == "websocket":
        options.setdefault("host", "127.0.0.1")
    async with bind(wire, **options) as server:
        if wire == "memory":
            yield server, {"server": server}
        else:
            yield server, {"host": "127.0.0.1", "port": server.port}  # type: ignore[attr-defined]


async def login_cookie(server: Any) -> str:
    """Log in as a browser does (token in the login form) and return its cookies."""
    http = AsyncHTTPClient()
    page = await http.fetch(server.url + "login")
    cookies = dict(c.split(";")[0].split("=", 1) for c in page.headers.get_list("Set-Cookie"))
    form = urlencode({"password": server.token, "_xsrf": cookies["_xsrf"]})
    response = await http.fetch(
        server.url + "login",
        method="POST",
        body=form,
        headers={"Cookie": f"_xsrf={cookies['_xsrf']}"},
        follow_redirects=False,
        raise_error=False,
    )
    for cookie in response.headers.get_list("Set-Cookie"):
        name, value = cookie.split(";")[0].split("=", 1)
        cookies[name] = value
    return "; ".join(f"{name}={value}" for name, value in cookies.items())
