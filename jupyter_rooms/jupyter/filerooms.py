"""Rooms bound to files: each room of a Jupyter server is loaded from, saved to and kept
merged with one file under the server's root, through its contents manager.

A room's history lives in an update log of its own (outside the user's files), so that
it is rebuilt after a restart or a crash exactly as it was: the log, not the file, is
the room. The log also records the document as of the last time it matched the file
(its last save, or the last change merged from the file). Comparing the file with that
tells what happened to the file meanwhile: nothing (even if the file lags behind the log
after a crash), or a change by someone else, which is merged three-way: the diff from
that last-known content to the file is applied to the document as of then, and the
result merged into the room, so that edits made in the room meanwhile are kept.

Only when a file has no usable history (its log is gone or unreadable, or the file
came back after it was deleted) does its room start a new *epoch*: clients that knew an
older one are told and start afresh instead of merging an unrelated history.

A room may also be shared with the same room on other servers (see
[jupyter_rooms.redis][]). Then the history the servers share is the room's, and one
server at a time, the *saver*, does what touches the file: it loads a room that has no
shared history yet, looks at the file, merges others' changes, saves, and keeps the log.
What the file was last saved with is shared too, so that the next saver knows it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import os
import shutil
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from uuid import uuid4

from anyio import (
    TASK_STATUS_IGNORED,
    CancelScope,
    Event,
    create_task_group,
    current_time,
    get_cancelled_exc_class,
    move_on_after,
    sleep,
    to_thread,
)
from anyio.abc import TaskGroup, TaskStatus
from anyio.lowlevel import checkpoint
from jupyter_core.utils import ensure_async
from jupyter_server.services.contents.filemanager import (
    AsyncFileContentsManager,
    FileContentsManager,
)
from pycrdt import Doc, Map, TransactionEvent, merge_updates
from tornado.web import HTTPError

from .._collector import collector_paused
from .._tasks import task_group
from ..channel import Channel, ChannelClosed
from ..protocol import (
    EMPTY_STATE,
    EMPTY_UPDATE,
    Message,
    MessageType,
    ProtocolError,
    control_message,
    parse_raw_request,
    raw_message,
)
from ..room import Room, RoomManager
from ..updatelog import LogContents, LogFormatError, UpdateLog
from .documents import (
    BlobKind,
    DocumentError,
    DocumentKind,
    NotebookKind,
    kind_for_path,
    kind_named,
)
from .forks import Branch
from .timeline import Fork, build_fork

__all__ = ["FileRoom", "FileRooms", "ForkError", "RoomOpenError", "RoomPathError"]

log = logging.getLogger("jupyter_rooms.jupyter")

# Close codes a file-bound room gives (the client library does not reconnect after them).
CLOSE_DELETED = 4404
CLOSE_CANNOT_OPEN = 4400

# Compaction: a log is rewritten as one update once it is larger than this many bytes
# and more than COMPACT_GROWTH times its size after the previous compaction.
DEFAULT_COMPACT_SIZE = 1024 * 1024
COMPACT_GROWTH = 4

# The log stamps its updates with the time they were made at most this often (seconds):
# the timeline of a room's history has a step per stamp.
STAMP_EVERY = 1.0

# How long a timeline's fork waits for its page to connect, and stays after it left
# (seconds); how many forks a server keeps at most (each is a copy of a document).
FORK_LINGER = 60.0
MAX_FORKS = 16

# During continuous editing a room still saves at least every this many save delays.
_MAX_SAVE_WAIT = 10

# How many times a save merges a change another program made to the file meanwhile,
# and tries again, before it leaves the write for later.
_SAVE_ATTEMPTS = 3
# How long a file another program wrote over a save must stay as it is before the room
# takes it (one written in place is empty, then partly written, for a moment).
_SETTLE = 0.05

# Reads any file as its bytes.
_FILE_BYTES = BlobKind()
# What the room knows a file to hold when it holds a piece of the room's own save.
_CUT_SHORT: Any = object()
# The content of a file read only to compare its hash, which was the one asked about.
_UNCHANGED: Any = object()
# The content of a file just written, read only for its hash: the file is as the
# contents manager said it left it.
_AS_WRITTEN: Any = object()

# The extension of a room's log, after the file's own name.
LOG_SUFFIX = ".ylog"

# The fields of the shared metadata that hold the saved document, in turns.
_BASE_FIELDS = ("base0", "base1")

# Seconds a room shared with other servers may wait, when it opens, for the server that
# loads it (one that died holding the saver lock holds it until the lock expires).
_SHARED_OPEN_TIMEOUT = 30.0


class _RefusalError(Exception):
    """A request the rooms refuse, with the HTTP status that fits and what is wrong,
    for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RoomPathError(_RefusalError):
    """A path that cannot have a room: outside the root, hidden, a directory...

    Args:
        status: The HTTP status that fits (400, 403 or 404).
        message: What is wrong, for the user.
    """


class SaveStatus:
    """How a save asked for by a client ended, as JupyterLab's save replies say it."""

    SUCCESS = "success"
    FAILED = "failed"


class _SaveRequest:
    """A client's request to save now, answered once the room's saver has run."""

    def __init__(self) -> None:
        self.done = Event()
        self.status = SaveStatus.FAILED

    def answer(self, status: str) -> None:
        self.status = status
        self.done.set()


class RoomOpenError(Exception):
    """A room could not be opened (its file is unreadable and it has no history)."""


class ForkError(_RefusalError):
    """A fork of a room (for its timeline, or an extension's) cannot be made, or cannot
    do what was asked.

    Args:
        status: The HTTP status that fits (404, 409 or 503).
        message: What is wrong, for the user.
    """


class _ForkRoom(Room):
    """The room of a fork: its document is the fork's, and the fork is forgotten when
    the room closes (a timeline's, a while after its last client left; an extension's,
    when it is deleted)."""

    def __init__(self, fork: Fork | Branch, forks: dict[str, Fork | Branch]) -> None:
        super().__init__(fork.id, doc=fork.doc)
        self._forks = forks

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            fork = self._forks.pop(self.id, None)
            if isinstance(fork, Branch):
                fork.close()


class _FileUnreadable(Exception):
    """The contents manager could not read the file as the room's kind."""


@dataclass(frozen=True)
class _Saved:
    """What the room knows the file to hold: the document as of the last time they matched.

    Attributes:
        hash: The file's hash then, as the contents manager computes it; ``None`` if not
            known (compare contents then).
        exists: Whether the file existed then.
        base: The document as of then, as an update.
        at: How many of the log's first updates make up ``base``; ``None`` when ``base``
            is kept in the log's metadata instead.
        time: When the room last wrote the file (ISO 8601), if it did.
    """

    hash: str | None
    exists: bool
    base: bytes
    at: int | None
    time: str | None = None

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"hash": self.hash, "exists": self.exists, "time": self.time}
        if self.at is not None:
            record["updates"] = self.at
        else:
            record["doc"] = base64.b64encode(self.base).decode()
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any], updates: list[bytes]) -> _Saved:
        if "doc" in record:
            base, at = base64.b64decode(record["doc"]), None
        else:
            at = min(int(record.get("updates", 0)), len(updates))
            base = _merged(updates[:at])
        return cls(record.get("hash"), bool(record.get("exists")), base, at, record.get("time"))


def _merged(updates: list[bytes]) -> bytes:
    if not updates:
        return Doc().get_update()
    return updates[0] if len(updates) == 1 else merge_updates(*updates)


def _doc_of(update: bytes) -> Doc:
    doc: Doc = Doc()
    doc.apply_update(update)
    return doc


def _content_of(kind: DocumentKind, update: bytes) -> Any:
    with collector_paused():
        return kind.content(_doc_of(update))


def _fingerprint(model: dict[str, Any]) -> tuple[Any, Any]:
    return (str(model.get("last_modified")), model.get("size"))


_NOTEBOOK = NotebookKind()

# The file a room's save is about to write, and what it was when the room last looked
# at it (``_identity``): set around the contents manager's save (see ``_guard_writes``).
_WRITING: ContextVar[tuple[str, tuple[int, int, int] | None] | None] = ContextVar(
    "jupyter_rooms_writing", default=None
)


class _ChangedUnderSave(HTTPError):
    """Another program wrote the file after the room looked at it, before its save did."""


def _identity(os_path: str) -> tuple[int, int, int] | None:
    """What tells one state of a file from another (``None``: there is no file)."""
    try:
        found = os.stat(os_path)
    except FileNotFoundError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


def _guard_writes(contents_manager: Any) -> None:
    """Have a local contents manager's writes for a room's save refuse a file that
    changed since the room last looked at it.

    jupyter_server's managers prepare a notebook (nodes, signature, validation: tens
    of ms for a large one) between being asked to save and opening the file; a change
    another program makes to the file then would be written over and lost. The check
    is made as the file is opened, for writes made under ``_WRITING`` only; others
    are left as they are.
    """
    writing = contents_manager.atomic_writing
    if getattr(writing, "_guards_rooms", False):
        return

    @contextmanager
    def atomic_writing(os_path: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        expected = _WRITING.get()
        if expected is not None and expected[0] == os_path and _identity(os_path) != expected[1]:
            raise _ChangedUnderSave(409, "the file changed as the room was saving it")
        with writing(os_path, *args, **kwargs) as file:
            yield file

    atomic_writing._guards_rooms = True  # type: ignore[attr-defined]
    contents_manager.atomic_writing = atomic_writing


def _reads_notebooks(contents_manager: Any) -> bool:
    """Whether a contents manager reads notebooks from local files as jupyter_server's
    own file managers do (none of the reading overridden), so that a room may read them
    from the files itself."""
    # The async manager is a kind of the other: look at it first.
    for base in (AsyncFileContentsManager, FileContentsManager):
        if isinstance(contents_manager, base):
            cls = type(contents_manager)
            names = ("get", "_notebook_model", "_read_notebook", "_read_file", "_get_os_path")
            return all(getattr(cls, name) is getattr(base, name) for name in names)
    return False


def _read_notebook_file(
    contents_manager: Any, path: str, unless_hash: str | None = None, parse: bool = True
) -> tuple[Any, dict[str, str]] | None:
    """A notebook's content as ``NotebookKind.from_model`` reads it from the contents
    manager, and the file's hash as the manager gives it; ``None`` when the manager must
    read it (it does not exist any more, or is anything but a plain notebook). A file
    whose hash is ``unless_hash`` is not parsed: its content is ``_UNCHANGED``; nor is
    one read with ``parse=False``: its content is ``_AS_WRITTEN``."""
    try:
        with open(contents_manager._get_os_path(path), "rb") as file:
            data = file.read()
    except (OSError, HTTPError):
        return None
    if unless_hash is not None or not parse:
        digest: dict[str, str] = contents_manager._get_hash(data)
        if unless_hash is not None and digest.get("hash") == unless_hash:
            return _UNCHANGED, digest
        if not parse:
            return _AS_WRITTEN, digest
        content = _NOTEBOOK.from_file(data)
    else:
        # Hashing lets go of the interpreter's lock: it runs beside the parsing, which
        # holds it (a few ms of a large notebook's opening).
        with ThreadPoolExecutor(1, thread_name_prefix="jupyter-rooms-hash") as pool:
            hashing = pool.submit(contents_manager._get_hash, data)
            content = _NOTEBOOK.from_file(data)
            digest = hashing.result()
    if content is None:
        return None
    return content, digest


def _within(path: str, directory: str) -> bool:
    """Whether a real path is a directory's or under it."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def normalize_path(path: str) -> str:
    """Normalise an API path the way the contents manager does: no leading, trailing
    or doubled slashes.

    Args:
        path: A path relative to the server's root.

    Returns:
        The normalised path.
    """
    return "/".join(part for part in path.split("/") if part)


class FileRoom(Room):
    """A room bound to a file under the server's root: its id is the file's path.

    It is built from its update log (or, with no history, from the file), merges
    changes made to the file by others, and saves its document to the file through the
    contents manager, ``save_delay`` seconds after changes, when its last client leaves
    and when it closes.

    Args:
        id: The file's path relative to the server's root, normalised.
        rooms: The server's rooms, whose settings and contents manager it uses.
        max_backlog: See [Room][jupyter_rooms.Room].

    Attributes:
        autosave: Whether the room saves by itself; JupyterLab pages turn it off through
            their presence (``autosave``) when everyone present has it off. Saves asked
            for by clients happen either way.
    """

    def __init__(self, id: str, *, rooms: FileRooms, max_backlog: int = 1024) -> None:
        super().__init__(id, max_backlog=max_backlog)
        self._rooms = rooms
        self.log = rooms.log
        self.kind: DocumentKind = kind_for_path(id)
        self.epoch = ""
        self.last_saved: str | None = None
        self._log: UpdateLog | None = None
        self._log_updates = 0
        self._compact_at = rooms.compact_size
        self._saved = _Saved(None, False, Doc().get_update(), 0)
        self._saved_content: Any = None
        # The last content that passed ``kind.validate`` (what changed since is checked).
        self._validated: Any = None
        self._fingerprint: tuple[Any, Any] | None = None
        self._dirty = False
        self._first_change = 0.0
        self._last_change = 0.0
        self._flush = False
        self._check_soon = False
        self._retry_at = 0.0
        self._missing_since: float | None = None
        self._file_error: str | None = None
        # While the file holds a piece of the room's own save (cut short by a crash),
        # the rest of it: what another program changing that piece never saw.
        self._cut_tail: Any = None
        # Whether the file holds such a piece (of any kind of file) until the room has
        # written it again: the log keeps the record of the save under way until then.
        self._repairing = False
        # The file's path and state at the save's last look (see ``_guard_writes``).
        self._file_identity: tuple[str, tuple[int, int, int] | None] | None = None
        self._deleted = False
        # Whether changes go to the log: from the moment the log's own content is loaded.
        self._logging = False
        # While the room writes its own bookkeeping (the ``state`` map): not a change to save.
        self._stamping = False
        # Whether the content roots are followed (``_watch_content``), and whether the
        # transaction ending now touched them.
        self._watching = False
        self._content_touched = False
        # The update of the transaction that built the document (see ``_start_epoch``).
        self._opening_update: bytes | None = None
        self._save_requests: list[_SaveRequest] = []
        self.autosave = True
        self._wake: Event | None = None
        # Changes held back from the log, to be written along with a record about them.
        self._held: list[bytes] | None = None
        # A new epoch's first log write, done in the background (see ``_start_epoch``):
        # what it writes, what goes to the log after it meanwhile, and when it is over.
        self._first_write: tuple[bytes, dict[str, Any], float | None] | None = None
        self._after_first_write: list[tuple[list[bytes], dict[str, Any] | None, float | None]] = []
        # When the log last got a time stamp (seconds since the epoch).
        self._stamped = 0.0
        self._first_write_over: Event | None = None
        self._channels: set[Channel] = set()
        # Whether this server does what touches the file (always, unless the room is
        # shared with other servers), as the loop that keeps the file last saw it, and
        # in which of this server's terms as the saver it took the role.
        self._saver_role = False
        self._role_term = 0
        self._publish_due = False
        # A save that was under way when the previous saver stopped: the doc it wrote.
        self._shared_saving: bytes | None = None
        # The shared metadata keeps two documents, the last saved and the one being
        # saved, in two fields that swap roles: which one holds the saved document, and
        # the bytes this server last knew there.
        self._shared_field = _BASE_FIELDS[0]
        self._shared_base: bytes | None = None
        # The shared record of what the file holds (the field ``saved``) as this server
        # last read or wrote it; whether it may be out of date: a merge's sharing got no
        # answer (Redis may hold it, and the record with it, or not: see
        # ``_share_merge``), or another server changed it.
        self._shared_record: str | None = None
        self._shared_record_stale = False
        self.saves = 0

    @property
    def unsaved(self) -> bool | None:
        """Whether the document has changes the file does not have yet, or may have (a
        server that just took over the room compares at its first save); ``None`` when
        another server saves the room (it is shared), since that server knows."""
        return (self._dirty or self._flush) if self._saver_role else None

    # Opening

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        """Load the room, keep it saved and merged with its file, and serve its changes.

        Args:
            task_status: Set once the room is loaded and forwards changes.

        Raises:
            RoomOpenError: The room has no history and its file cannot be read.
        """
        subscription = self.doc.observe(self._on_change)
        presence = self.awareness.observe(self._on_presence)
        watching: list[tuple[Any, Any]] = []
        try:
            shared = await self._shared_history()
            if shared is not None:
                self._join(shared)
            else:
                await self._open()
                self._saver_role = True
                self._role_term = self.saver_term
                if self._first_write is not None:
                    self.task_group.start_soon(self.write_history)
                await self._publish_saved(opening=True)
            self._stamp_state(path=self.id)
            watching = self._watch_content()
            await self.task_group.start(self._keep_file)
            await super().run(task_status=task_status)
        finally:
            # Changes held until the log's first record is written are taken before the
            # room stops following its document (they go to the log, and the save that
            # closes the room writes them).
            with CancelScope(shield=True):
                await self.write_history()
                await self.changes_taken()
            self.doc.unobserve(subscription)
            for root, watch in watching:
                root.unobserve(watch)
            self.awareness.unobserve(presence)

    def _on_presence(self, topic: str, changes: tuple[dict[str, Any], Any]) -> None:
        # JupyterLab pages say in their presence whether their person wants autosave.
        # Like jupyter-collaboration: on if anyone present wants it (or does not say);
        # when everyone has left, the last wish stands until someone comes.
        if topic != "change":
            return
        wishes = [state.get("autosave", True) for state in self.awareness.states.values() if state]
        if wishes:
            self.autosave = any(wishes)

    async def _open(self) -> None:
        if self.doc.get_state() != EMPTY_STATE:
            # Shared with other servers that left no metadata: their history wins.
            await self._adopt_history()
            return
        updatelog = UpdateLog(self._rooms.log_path(self.id))
        contents = None
        try:
            contents = updatelog.load()
        except LogFormatError as exc:
            self._set_aside(updatelog.path, str(exc))
        except OSError as exc:
            raise RoomOpenError(f"cannot read the history of {self.id}: {exc}") from None
        self._log = updatelog
        meta = contents.meta if contents is not None else {}
        usable = bool(contents and contents.updates) and isinstance(meta.get("saved"), dict)
        try:
            usable = usable and bool(meta.get("epoch")) and bool(kind_named(meta.get("kind", "")))
        except DocumentError:
            usable = False
        if usable:
            assert contents is not None
            if await self._restore(contents.updates, meta):
                return
        elif contents is not None and (contents.updates or contents.meta):
            self._set_aside(updatelog.path, "it lacks the room's epoch or save records")
        await self._start_epoch(self._rooms.promised_epoch(self.id))

    def _set_aside(self, path: Path, why: str) -> None:
        aside = path.with_name(f"{path.name}.unusable-{int(time.time())}")
        try:
            os.replace(path, aside)
        except OSError:
            return
        self.log.warning("room %r: set its log aside as %s (%s)", self.id, aside, why)

    async def _restore(self, updates: list[bytes], meta: dict[str, Any]) -> bool:
        """Rebuild the room from its log; ``False`` if its file was deleted meanwhile."""
        self.kind = kind_named(meta["kind"])
        saved = _Saved.from_record(meta["saved"], updates)
        try:
            # A file with the hash it had when it last matched the room is that file:
            # nothing to merge nor to look at (it need not even be read as a notebook).
            model, content = await self._read_content(self.kind, unless_hash=saved.hash)
        except (_FileUnreadable, DocumentError) as exc:
            model, content = None, None
            self._file_error = str(exc)
        if model is None and self._file_error is None and saved.exists:
            self.log.info("room %r: its file was deleted while the room was closed", self.id)
            return False
        self.epoch = meta["epoch"]
        self.last_saved = saved.time
        whole = _merged(updates)
        self.doc.apply_update(whole)
        # The first clients' sync reply (with the changes made since, for a while).
        self._keep_whole(whole)
        self._log_updates = len(updates)
        self._logging = True
        self._saved = saved
        # Changes the log has and the file may lack (the server stopped before saving):
        # the next save compares contents and writes only if they differ.
        self._dirty = saved.at != self._log_updates
        self._first_change = self._last_change = current_time()
        # A save under way when the server stopped: how many of the log's updates make
        # up the document it was writing (built only when the file must be compared).
        saving = meta.get("saving")
        at = min(int(saving.get("updates", 0)), len(updates)) if isinstance(saving, dict) else None

        def pending() -> _Saved:
            return _Saved(None, True, _merged(updates[:at]), at)

        if self._file_error is not None:
            if at is not None and await self._own_save_cut_short(pending()):
                return True
            self.log.warning("room %r: cannot read its file: %s", self.id, self._file_error)
            return True
        if model is None:
            return True
        assert content is not None
        self._fingerprint = _fingerprint(model)
        if content is _UNCHANGED:
            return True
        if (
            at is not None
            and model.get("hash") != saved.hash
            and self._settle_save(replace(pending(), hash=model.get("hash")), content)
        ):
            return True
        await self._take_file(model, content)
        return True

    def _settle_save(self, pending: _Saved, content: Any) -> bool:
        """Did a save that was under way when its server stopped reach the file? Whether
        that settles what the file holds; if not, the file's change is merged as any.

        Args:
            pending: The document the save was writing, with the file's hash now.
            content: The file's content now.
        """
        written = self.kind.content(_doc_of(pending.base))
        if self.kind.same(content, written):
            self._set_saved(pending)
            self._dirty = pending.at is None or pending.at != self._log_updates
            return True
        if self.kind.cut_short(content, written):
            # The server stopped in the middle of writing the file: what is there is a
            # piece of the room's own save, not someone else's change, and merging it
            # would delete the rest. Write the file again instead.
            self.log.warning("room %r: its last save was cut short; saving again", self.id)
            # Not recorded: should the server stop again before the file is written, the
            # record of the save under way (in the log, or shared) still tells.
            self._saved = replace(pending, hash=None)
            self._saved_content = content
            self._cut_tail = written[len(content) :]
            self._repairing = True
            # At once: until then another program could take the piece for the file.
            self._dirty = self._flush = True
            return True
        if self.kind.difference(content, written) < self.kind.difference(
            content, self._saved_content_now()
        ):
            # Another program changed the file after the room's save reached it: merge
            # its change from what the room wrote, not from the save before (which would
            # add what the room wrote a second time).
            self._set_saved(replace(pending, hash=None))
            self._saved_content = written
        return False

    async def _own_save_cut_short(self, pending: _Saved) -> bool:
        """Whether the unreadable file is the beginning of the room's own save of
        ``pending``, cut short when its server stopped (then the room writes it again);
        any other unreadable file is left alone."""
        written = self.kind.file_bytes(self.kind.content(_doc_of(pending.base)))
        if written is None:
            return False
        try:
            model = await self._read(_FILE_BYTES, content=True)
            raw = _FILE_BYTES.from_model(model) if model is not None else None
        except (_FileUnreadable, DocumentError):
            return False
        if model is None or raw is None or not _FILE_BYTES.cut_short(raw, written):
            return False
        self.log.warning("room %r: its last save was cut short; saving again", self.id)
        self._file_error = None
        self._fingerprint = _fingerprint(model)
        # Not recorded: should the server stop again before the file is written, the
        # record of the save under way (in the log, or shared) still tells.
        self._saved = pending
        # Nothing readable is there: whatever the room holds differs from it.
        self._saved_content = _CUT_SHORT
        self._repairing = True
        self._dirty = self._flush = True
        return True

    async def _start_epoch(self, promised: str | None = None) -> None:
        """Start the room's history afresh, from its file if there is one.

        The epoch is the one promised to a session (``promised``), if any, a new one
        otherwise.
        The log's first record (the document as built from the file) is written in the
        background (``write_history``) rather than before the first client is served:
        until it is on disk the file holds all of it, so a crash meanwhile loses nothing
        (the next opening starts another epoch from the file, as it would have), and no
        change of a client is applied, nor sent to the others, before it is written.
        """
        guess = kind_for_path(self.id)
        try:
            if guess.name in ("notebook", "room"):
                model, content = await self._read_content(guess)
                self.kind = guess
            else:
                model = await self._read(None, content=True)
                self.kind = kind_for_path(self.id, model.get("format") if model else None)
                content = self.kind.from_model(model) if model is not None else None
        except (_FileUnreadable, DocumentError) as exc:
            raise RoomOpenError(f"cannot open {self.id}: {exc}") from None
        self.epoch = promised or uuid4().hex
        # One transaction: pycrdt encodes each transaction's update as it ends, and that
        # of the first is the whole document (encoding it again takes 10 ms for a large
        # notebook).
        fresh = self.doc.get_state() == EMPTY_STATE
        self._opening_update = None
        with collector_paused(), self.doc.transaction():
            if content is not None and fresh:
                # A large notebook takes tens of ms to build: requests go on between its
                # cells (the socket of the page that opens it is taken meanwhile, and
                # its sync request waits there for the room). Nothing else uses this
                # document before the room is open.
                for _ in self.kind.fill(self.doc, content):
                    await checkpoint()
            elif content is not None:
                self.kind.update(self.doc, self.kind.content(self.doc), content)
            if self.kind.name != "room":
                # What ``run`` would stamp at once, in the first record rather than after.
                self.doc.get("state", type=Map)["path"] = self.id
        update = self._opening_update if fresh else None
        self._opening_update = None
        if update is None:
            update = self.doc.get_update()
        self._saved = _Saved(model.get("hash") if model else None, model is not None, update, 1)
        self._saved_content = content
        self._fingerprint = _fingerprint(model) if model is not None else None
        assert self._log is not None
        self._first_write = (update, self._meta(), self._stamp(force=True))
        self._first_write_over = Event()
        self.hold_changes()
        # The first clients' sync reply, with the changes made since for a while (it is
        # the saved document too: kept anyway).
        self._keep_whole(update)
        self._log_updates = 1
        self._logging = True
        self.log.info("room %r: new epoch %s (no earlier history)", self.id, self.epoch)

    async def write_history(self) -> None:
        """Write the log's first record of a new epoch if it is not written yet, and
        return once it is (or once writing it failed, which closes the room)."""
        over = self._first_write_over
        if over is None:
            return
        if self._first_write is None:
            # Being written.
            await over.wait()
            return
        update, meta, stamp = self._first_write
        self._first_write = None
        updatelog = self._log
        assert updatelog is not None
        try:
            with CancelScope(shield=True):
                await to_thread.run_sync(lambda: updatelog.rewrite(update, meta, time=stamp))
                for updates, record, later in self._after_first_write:
                    updatelog.append(updates, meta=record, time=later)
        except BaseException as exc:
            # Without its history the room cannot take changes: it closes, and clients
            # that come back find it opened anew (a new epoch from the file). Changes
            # that waited go nowhere: their clients are disconnected first.
            self._log = None
            self._logging = False
            for channel in list(self._channels):
                self.disconnect(channel, 1011, f"server error: cannot keep the history: {exc}")
            self.take_changes()
            raise
        else:
            self._compact_at = max(self._rooms.compact_size, COMPACT_GROWTH * updatelog.size)
            self.take_changes()
        finally:
            self._after_first_write = []
            self._first_write_over = None
            over.set()

    async def history(self) -> LogContents | None:
        """The room's history as its log keeps it (since the log was last compacted).

        Returns:
            The log's contents; ``None`` if this server keeps no log of the room.

        Raises:
            LogFormatError: The log cannot be read as one.
            OSError: The log cannot be read.
        """
        await self.write_history()
        if self._log is None:
            return None
        # Read here, between two of the room's appends (they are made on this thread).
        return UpdateLog(self._log.path).load()

    def _stamp(self, *, force: bool = False) -> float | None:
        """The time to stamp the log's next updates with, if a stamp is due."""
        now = time.time()
        if not force and abs(now - self._stamped) < STAMP_EVERY:
            return None
        self._stamped = now
        return now

    def _log_append(self, updates: list[bytes], meta: dict[str, Any] | None = None) -> None:
        """Append to the log, after its first record if that is still being written."""
        assert self._log is not None
        stamp = self._stamp() if updates else None
        if self._first_write_over is not None:
            self._after_first_write.append((updates, meta, stamp))
        else:
            self._log.append(updates, meta=meta, time=stamp)

    async def _adopt_history(self) -> None:
        """Bind a history that came without metadata to the file: the file gets the doc."""
        try:
            model = await self._read(None, content=False)
        except _FileUnreadable:
            model = None
        self.kind = kind_for_path(self.id, model.get("format") if model else None)
        self.epoch = uuid4().hex
        update = self.doc.get_update()
        self._saved = _Saved(model.get("hash") if model else None, model is not None, update, 1)
        self._log = UpdateLog(self._rooms.log_path(self.id))
        self._log.rewrite(update, self._meta(), time=self._stamp(force=True))
        self._log_updates = 1
        self._logging = True
        self._dirty = self._flush = True
        self.log.info("room %r: new epoch %s for a history without metadata", self.id, self.epoch)

    def _meta(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "kind": self.kind.name,
            "path": self.id,
            "saved": self._saved.record(),
            "saving": None,
        }

    # Sharing with other servers. A room class that shares the room (RedisRoom, mixed in
    # before this one) overrides these down to ``apply_shared``; alone, a server is the
    # saver and shares nothing.

    # Whether the room's history is shared with other servers.
    shares_history = False
    # How many times this server took the saver's role (see ``_follow_saver``).
    saver_term = 0

    @property
    def is_saver(self) -> bool:
        """Whether this server saves the room: always, unless it is shared with others."""
        return True

    async def load_shared_meta(self) -> dict[str, bytes] | None:
        """The room's metadata as the servers that share it stored it; ``None`` if none."""
        return None

    async def store_shared_meta(
        self, fields: Mapping[str, bytes | str], *, expect: str | None = None
    ) -> bool:
        """Share fields of the room's metadata with the other servers.

        Args:
            fields: The fields to set.
            expect: If given, set them only if this server is the saver and the shared
                record of what the file holds (the field ``saved``) is still this, both
                checked as they are set: no other server saved or merged the file since
                this one last knew.

        Returns:
            Whether they were set.
        """
        return True

    async def drop_shared(self) -> None:
        """Forget what the servers share about the room (its file was deleted)."""

    async def share_change(
        self, change: bytes, fields: Mapping[str, bytes | str], *, expect: str | None = None
    ) -> bool:
        """Give the other servers a change to the document together with fields of the
        shared metadata, in one write that they see whole or not at all, if this server
        is still the saver (and, with ``expect``, as ``store_shared_meta``). The room
        applies the change with ``apply_shared`` after.

        Args:
            change: The update.
            fields: The fields to set.
            expect: The shared record of what the file holds, as this server knows it.

        Returns:
            Whether it was given: not if another server saves the room now, or saved or
            merged the file since.
        """
        return True

    def apply_shared(self, change: bytes) -> None:
        """Apply a change that ``share_change`` gave the other servers already."""
        self.doc.apply_update(change)

    def saver_changed(self) -> None:
        """Have the room take over or give up the file, as ``is_saver`` now says."""
        self._wake_up()

    async def _shared_history(self) -> dict[str, bytes] | None:
        """The room's metadata from the servers it is shared with, once one of them loaded
        it; ``None`` when this server is the one to load it (always so, alone)."""
        with move_on_after(_SHARED_OPEN_TIMEOUT):
            while True:
                meta = await self.load_shared_meta()
                if meta is not None and meta.get("epoch"):
                    return meta
                if self.is_saver:
                    # Whoever held the lock before may have loaded it meanwhile.
                    meta = await self.load_shared_meta()
                    return meta if meta is not None and meta.get("epoch") else None
                await sleep(0.05)
        raise RoomOpenError(f"cannot open {self.id}: no server could load it in time")

    def _join(self, meta: dict[str, bytes]) -> None:
        """Take on the history the other servers share (the document has it already)."""
        try:
            self.kind = kind_named(meta.get("kind", b"").decode())
        except DocumentError as exc:
            raise RoomOpenError(f"cannot open {self.id}: {exc}") from None
        self.epoch = meta["epoch"].decode()
        self._adopt_saved(meta)
        self._logging = True

    def _adopt_saved(self, meta: dict[str, bytes]) -> None:
        record = json.loads(meta.get("saved") or b"{}")
        field = record.get("base") if record.get("base") in _BASE_FIELDS else _BASE_FIELDS[0]
        base = meta.get(field) or Doc().get_update()
        self._saved = _Saved(
            record.get("hash"), bool(record.get("exists")), base, None, record.get("time")
        )
        self._shared_field, self._shared_base = field, base
        self._saved_content = None
        self._fingerprint = None
        self.last_saved = record.get("time")
        spare = meta.get(self._spare_field()) if record.get("saving") else None
        self._shared_saving = spare or None
        self._shared_record = (meta.get("saved") or b"").decode() or None
        self._shared_record_stale = False

    def _spare_field(self) -> str:
        return _BASE_FIELDS[1] if self._shared_field == _BASE_FIELDS[0] else _BASE_FIELDS[0]

    def _saved_record(
        self, field: str, *, saving: bool = False, saved: _Saved | None = None
    ) -> str:
        saved = self._saved if saved is None else saved
        record = {"hash": saved.hash, "exists": saved.exists, "time": saved.time}
        return json.dumps({**record, "base": field, "saving": saving})

    async def _publish_saved(self, *, opening: bool = False, stored_in: str | None = None) -> None:
        """Share what the file was last saved with; ``stored_in`` names the field that
        already holds the document (a save put it there before writing the file)."""
        self._publish_due = False
        base = self._saved.base
        fields: dict[str, bytes | str] = {}
        if stored_in is not None:
            field = stored_in
        elif base is self._shared_base:
            field = self._shared_field
        else:
            field = self._spare_field()
            fields[field] = base
        fields["saved"] = self._saved_record(field)
        if opening:
            fields.update(epoch=self.epoch, kind=self.kind.name)
            await self.store_shared_meta(fields)
            self._shared_record = str(fields["saved"])
        elif not await self._store_record(fields):
            return
        self._shared_field, self._shared_base = field, base

    async def _store_record(self, fields: dict[str, bytes | str]) -> bool:
        """Share a new record of what the file holds (``fields``, with ``saved``), as the
        saver and over the record this server last knew; whether it was. If not, another
        server saves the room now, or saved or merged the file since: the record is read
        again before the room acts on the file (``_reload_shared_record``)."""
        if not await self.store_shared_meta(fields, expect=self._shared_record):
            self._shared_record_stale = True
            self.log.info(
                "room %r: another server saves the room now, or saved or merged its file "
                "meanwhile: this server reads the record of the file again",
                self.id,
            )
            return False
        self._shared_record = str(fields["saved"])
        return True

    async def _follow_saver(self) -> None:
        if self.is_saver and (not self._saver_role or self.saver_term != self._role_term):
            # Taking the role, or taking it again: it was lost and taken back between two
            # looks, and another server may have saved in between.
            try:
                await self._take_over()
            except Exception as exc:
                self.log.warning("room %r: could not take over saving: %s", self.id, exc)
        elif not self.is_saver and self._saver_role:
            self._saver_role = False
            self._publish_due = False
            if self._log is not None:
                self._log.close()
                self._log = None
            self.log.debug(
                "room %r: stopped saving: it is no longer this server's to save", self.id
            )

    async def _take_over(self) -> None:
        """This server saves the room from now on: learn what the file was last saved with,
        keep the log, and save what the room has (after merging the file's changes)."""
        term = self.saver_term
        meta = await self.load_shared_meta()
        if meta is not None and meta.get("epoch", b"").decode() == self.epoch:
            self._adopt_saved(meta)
        self._open_shared_log()
        if self._shared_saving is not None:
            await self._settle_interrupted_save(self._shared_saving)
        self._saver_role = True
        self._role_term = term
        self._flush = True
        self._check_soon = True
        self.log.debug("room %r: took over saving", self.id)

    def _open_shared_log(self) -> None:
        """Keep the log again, starting from the whole document; a log of the same epoch
        may hold changes that never reached the others (a saver killed before sending)."""
        if self._log is not None:
            return
        updatelog = UpdateLog(self._rooms.log_path(self.id))
        try:
            contents = updatelog.load()
        except LogFormatError as exc:
            self._set_aside(updatelog.path, str(exc))
            contents = None
        except OSError as exc:
            self.log.warning("room %r: cannot read its log: %s", self.id, exc)
            contents = None
        if contents is not None and contents.updates and contents.meta.get("epoch") == self.epoch:
            self.doc.apply_update(_merged(contents.updates))
        elif contents is not None and (contents.updates or contents.meta):
            self._set_aside(updatelog.path, "it holds another epoch's history")
        self._saved = replace(self._saved, at=None)
        try:
            updatelog.rewrite(self.doc.get_update(), self._meta(), time=self._stamp(force=True))
        except OSError as exc:
            self.log.warning("room %r: cannot write its log: %s", self.id, exc)
            return
        self._log = updatelog
        self._log_updates = 1
        self._compact_at = max(self._rooms.compact_size, COMPACT_GROWTH * updatelog.size)

    async def _settle_interrupted_save(self, doc_update: bytes) -> None:
        """The previous saver stopped during a save (of ``doc_update``): did it reach the
        file, or only part of it? As when a server restarts from its log (``_restore``);
        a change of someone else's is left to the look at the file that follows."""
        self._shared_saving = None
        pending = _Saved(None, True, doc_update, None)
        try:
            model, content = await self._read_content(self.kind)
        except (_FileUnreadable, DocumentError):
            await self._own_save_cut_short(pending)
            return
        if model is None or model.get("hash") == self._saved.hash:
            return
        if self._settle_save(replace(pending, hash=model.get("hash")), content):
            # Nothing of anyone else's to merge: the next look need not read it again.
            self._fingerprint = _fingerprint(model)

    # Clients

    async def serve(
        self,
        client: Channel,
        *,
        read_only: bool = False,
        task_status: TaskStatus[None] = TASK_STATUS_IGNORED,
    ) -> None:
        """Serve one client: tell it the room's epoch first, then sync as any room does.

        Args:
            client: The channel to the client.
            read_only: Refuse the client's updates.
            task_status: Set once the client is part of the room.
        """
        self._channels.add(client)
        try:
            notice = {"type": "epoch", "epoch": self.epoch, "path": self.id}
            await client.send(control_message(notice))
            if self._file_error is not None:
                await client.send(control_message(self._file_error_notice()))
            await super().serve(client, read_only=read_only, task_status=task_status)
        except ChannelClosed:
            pass
        finally:
            self._channels.discard(client)
            if not self._channels and self._dirty:
                # The last client left: save now rather than after the delay (a room
                # without changes has nothing to save, nor to compare with its file).
                self._flush = True
                self._wake_up()

    def _file_error_notice(self) -> dict[str, Any]:
        return {
            "type": "error",
            "reason": f"cannot read {self.id}: {self._file_error}; "
            "changes are kept in the room and saved once the file can be read again",
        }

    def close_deleted(self, reason: str) -> None:
        """Mark the room's file as deleted: disconnect its clients with ``reason``, never
        save again, and drop the room's history when it closes.

        Args:
            reason: Why, for the clients.
        """
        self._deleted = True
        for channel in list(self._channels):
            self.disconnect(channel, CLOSE_DELETED, reason)
        self._wake_up()

    # Changes

    def _on_change(self, event: TransactionEvent) -> None:
        if not self._forwarding:
            # The room keeps its document as a whole from the moment it is loaded;
            # once it forwards changes, it follows them itself.
            self._keep_whole(None)
        touched, self._content_touched = self._content_touched, False
        if not self._logging:
            # Opening: ``_start_epoch`` may take the update (already encoded).
            self._opening_update = event.update
            return
        update = event.update
        if update == EMPTY_UPDATE:
            return
        if self._log is not None:
            if self._held is not None:
                self._held.append(update)
            else:
                self._log_append([update])
            self._log_updates += 1
        if self._stamping or (self._watching and not touched):
            # Bookkeeping (the page's ``state``, a cell's execution state): kept in
            # the log, nothing to save.
            return
        now = current_time()
        self._last_change = now
        if not self._dirty:
            self._first_change = now
            self._dirty = True
            # Only the first change sets a save deadline; later ones move it later, which
            # the file keeper finds when it wakes at the earlier one.
            if self._saver_role:
                self._wake_up()

    def _watch_content(self) -> list[tuple[Any, Any]]:
        """Follow the root types that hold the file's content, so that changes to
        anything else do not start a save (which reads the whole document)."""
        roots = self.kind.content_roots
        if roots is None:
            self._watching = False
            return []
        watching = []
        for name, root_type in roots.items():
            root = self.doc.get(name, type=root_type)
            watching.append((root, root.observe_deep(self._on_content_events)))
        self._watching = True
        return watching

    def _on_content_events(self, events: list[Any]) -> None:
        # Called as a transaction ends, before ``_on_change`` is for the same one.
        if not self.kind.bookkeeping(events):
            self._content_touched = True

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def check_file_soon(self) -> None:
        """Compare the room with its file at once (someone saved it through the server)."""
        self._check_soon = True
        self._wake_up()

    def _save_due(self) -> float:
        if self._flush:
            return self._retry_at
        delay = self._rooms.save_delay
        due = min(self._last_change + delay, self._first_change + _MAX_SAVE_WAIT * delay)
        return max(due, self._retry_at)

    def _retry_later(self) -> None:
        self._retry_at = current_time() + max(
            1.0, self._rooms.poll_interval, self._rooms.save_delay
        )

    async def _keep_file(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        poll = self._rooms.poll_interval
        task_status.started()
        try:
            # Nothing that touches the log before its first record is written.
            await self.write_history()
            next_poll = current_time() + poll
            while not self._deleted:
                # Only the saver touches the file; the others wait to become it.
                self._wake = Event()
                await self._follow_saver()
                deadline = math.inf
                if self.is_saver and not self._saver_role:
                    # Taking over failed (Redis went away meanwhile): try again soon.
                    deadline = current_time() + 1.0
                if self._saver_role:
                    deadline = next_poll if poll > 0 else math.inf
                    if (self._dirty or self._flush) and self.autosave:
                        deadline = min(deadline, self._save_due())
                    if self._check_soon or self._save_requests:
                        deadline = 0
                wait = deadline - current_time()
                if wait > 0:
                    with move_on_after(wait):
                        await self._wake.wait()
                if self._deleted:
                    break
                if not self._saver_role or not self.is_saver:
                    if self._save_requests:
                        # Another server saves this file; it does so on its own schedule.
                        self.log.info(
                            "room %r: a save asked of a server that does not save it", self.id
                        )
                        requests, self._save_requests = self._save_requests, []
                        for request in requests:
                            request.answer(SaveStatus.FAILED)
                    continue
                now = current_time()
                if self._check_soon or (poll > 0 and now >= next_poll):
                    self._check_soon = False
                    await self._check_file()
                    next_poll = current_time() + poll
                if self._save_requests:
                    requests, self._save_requests = self._save_requests, []
                    status = SaveStatus.SUCCESS if await self._save() else SaveStatus.FAILED
                    for request in requests:
                        request.answer(status)
                elif (
                    (self._dirty or self._flush)
                    and self.autosave
                    and current_time() >= self._save_due()
                ):
                    await self._save()
                self._maybe_compact()
                if self._publish_due:
                    await self._try_publish()
        finally:
            for request in self._save_requests:
                request.answer(SaveStatus.FAILED)
            self._save_requests = []
            with CancelScope(shield=True):
                await self._close_file()

    async def _try_publish(self, stored_in: str | None = None) -> None:
        try:
            await self._publish_saved(stored_in=stored_in)
        except Exception as exc:
            self._publish_due = True
            self.log.warning("room %r: could not share its save record: %s", self.id, exc)

    async def _close_file(self) -> None:
        await self.write_history()
        await self.changes_taken()
        # With autosave off, what was not saved stays in the room's log (the room
        # reopens with it), not in the file.
        saver = self._saver_role and self.is_saver
        if saver and not self._deleted and (self._dirty or self._flush) and self.autosave:
            self._retry_at = 0.0
            with move_on_after(self._rooms.shutdown_timeout):
                await self._save()
        if saver and self._publish_due and not self._deleted:
            with move_on_after(self._rooms.shutdown_timeout):
                await self._try_publish()
        if self._deleted:
            with move_on_after(self._rooms.shutdown_timeout):
                try:
                    await self.drop_shared()
                except Exception as exc:
                    self.log.warning("room %r: could not drop its shared history: %s", self.id, exc)
        updatelog, self._log = self._log, None
        if updatelog is None:
            if self._deleted:
                self._rooms.remove_logs(self.id)
            return
        if self._deleted:
            updatelog.close()
            self._rooms.remove_logs(self.id)
            return
        if saver and not self._saved.exists and self._unchanged():
            # A path with no file that nobody wrote to: keep no history for it (clients
            # that only look must not leave a log behind for every path they try).
            updatelog.close()
            self._rooms.forget_log(self.id)
            return
        self._maybe_compact(updatelog)
        updatelog.close()

    def _unchanged(self) -> bool:
        """Whether the document holds just what the room last knew the file to hold."""
        return bool(self.kind.same(self.kind.content(self.doc), self._saved_content_now()))

    # The file

    async def _read(
        self, kind: DocumentKind | None, *, content: bool, hash: bool = True
    ) -> dict[str, Any] | None:
        """The file's model, or ``None`` if it does not exist."""
        cm = self._rooms.contents_manager
        try:
            # A notebook's content is tens of thousands of new nodes (see ``_save_once``).
            with CancelScope(shield=True), collector_paused() if content else nullcontext():
                model: dict[str, Any] = await ensure_async(
                    cm.get(
                        self.id,
                        content=content,
                        type=kind.model_type if kind is not None else "file",
                        format=kind.model_format if kind is not None and content else None,
                        require_hash=hash,
                    )
                )
        except HTTPError as exc:
            if exc.status_code == 404:
                return None
            raise _FileUnreadable(self._rooms.relative(exc.log_message or str(exc))) from None
        except (OSError, ValueError) as exc:
            raise _FileUnreadable(self._rooms.relative(str(exc))) from None
        return model

    async def _read_content(
        self,
        kind: DocumentKind,
        *,
        unless_hash: str | None = None,
        written: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any] | None, Any]:
        """The file's model and its content as ``kind`` reads it; ``(None, None)`` if
        the file does not exist. A file whose hash is ``unless_hash`` is not read as
        ``kind`` (which may fail, and takes a while for a large notebook): its content is
        then ``_UNCHANGED``. A notebook the room just wrote (``written``: the model the
        contents manager answered its save with) whose size and time are still those is
        not parsed either: its content is ``_AS_WRITTEN``.

        A notebook of a local contents manager's is read from its file here: the
        manager's reading (notebook objects, a schema validation that only logs, a trust
        check whose marks the room drops) takes most of the time of opening a large
        notebook. Anything but a plain notebook is read through the manager.
        """
        if kind.name == "notebook" and self._rooms.reads_notebooks:
            # The manager's checks (hidden, outside the root, a directory) and its
            # figures for the file (size, time), without the content.
            model = await self._read(kind, content=False, hash=False)
            if model is None:
                return None, None
            cm = self._rooms.contents_manager
            # Parsing 10 MB of JSON holds every thread of the server for tens of ms.
            parse = written is None or _fingerprint(model) != _fingerprint(written)
            # Not cancelled half way, as reads through the contents manager are not.
            with CancelScope(shield=True):
                read = await to_thread.run_sync(
                    _read_notebook_file, cm, self.id, unless_hash, parse
                )
            if read is not None:
                content, digest = read
                return {**model, "format": "json", **digest}, content
        if unless_hash is not None:
            model = await self._read(kind, content=False)
            if model is None or model.get("hash") == unless_hash:
                return model, _UNCHANGED if model is not None else None
        model = await self._read(kind, content=True)
        return model, kind.from_model(model) if model is not None else None

    async def _check_file(self) -> None:
        """Merge what someone else changed in the file since the room last matched it."""
        if self._shared_record_stale and not await self._reload_shared_record():
            return
        try:
            model = await self._read(self.kind, content=False, hash=False)
        except _FileUnreadable as exc:
            self._file_problem(str(exc))
            return
        if model is None:
            self._file_missing()
            return
        self._missing_since = None
        if self._file_error is None and _fingerprint(model) == self._fingerprint:
            return
        try:
            model, content = await self._read_content(self.kind)
        except (_FileUnreadable, DocumentError) as exc:
            self._file_problem(str(exc))
            return
        if model is None:
            self._file_missing()
            return
        self._fingerprint = _fingerprint(model)
        if self._file_error is not None:
            self._file_error = None
            self.log.info("room %r: its file is readable again", self.id)
        await self._take_file(model, content)

    async def _take_file(self, model: dict[str, Any], content: Any) -> None:
        file_hash = model.get("hash")
        if file_hash is not None and file_hash == self._saved.hash:
            return
        if self.kind.same(content, self._saved_content_now()):
            # Same content in other bytes (a touch, another writer's formatting).
            self._set_saved(replace(self._saved, hash=file_hash, exists=True))
            self._stamp_state(file_hash)
            return
        tail = self._cut_tail
        if tail is not None and type(content) is type(tail):
            # Someone changed the piece of the room's save a crash left in the file:
            # the rest of that save, which they never saw, is not theirs to delete. The
            # room writes the whole again.
            if not await self._merge(content + tail, None, cut_short=True):
                self._fingerprint = None
                return
            self._saved_content = content
            self._dirty = self._flush = True
            return
        if not await self._merge(content, file_hash):
            # The next look at the file, by whichever server saves the room then.
            self._fingerprint = None
            return
        self._stamp_state(file_hash)

    async def _merge(self, content: Any, file_hash: str | None, cut_short: bool = False) -> bool:
        """Apply the change from the last-known content to ``content`` to the document as
        of then, and merge the result into the room; whether it was (not if the room is
        shared and the merge could not be shared: see ``_share_merge``).

        ``cut_short``: the file holds only the beginning of ``content`` (a piece of the
        room's save, changed by someone): the record says a save of the merged document
        is under way, so that should the server stop before writing it, the next
        opening finds the piece cut short again rather than merging it as a deletion."""
        kind, saved_base = self.kind, self._saved.base

        def diff() -> tuple[bytes, bytes]:
            # The change, and the document as of the file with it.
            base = _doc_of(saved_base)
            state = base.get_state()
            kind.update(base, kind.content(base), content)
            return base.get_update(state), base.get_update()

        # For a notebook of thousands of cells this takes a second or more: not on the
        # event loop (every other room's clients, and a shared room's renewals of its
        # saver lock, would wait).
        change, merged = diff() if self._rooms.stopping else await to_thread.run_sync(diff)
        if self.shares_history and self._saver_role:
            if not await self._share_merge(change, merged, file_hash):
                return False
        # The merged change and the record that the room now has the file's content go
        # to the log in one write: a crash between the two (comparing a large notebook
        # takes a while) would have the file's change merged again, twice, on restart.
        # Nor do clients get the change before it is written: one that had it when the
        # server was killed would give it back, beside the file's change merged again.
        with self.forwarding_held():
            self._held = []
            try:
                self.apply_shared(change)
                matches = self.kind.same(self.kind.content(self.doc), content)
            except BaseException:
                held, self._held = self._held, None
                if self._log is not None and held:
                    self._log_append(held)
                raise
            held, self._held = self._held, None
            if matches:
                saved = _Saved(file_hash, True, self.doc.get_update(), self._log_updates)
            else:
                saved = _Saved(file_hash, True, merged, None)
            self._set_saved(saved, held, saving=self._log_updates if cut_short else None)
        self._saved_content = content
        if matches:
            self._dirty = False
        self.log.info("room %r: merged a change made to its file outside the room", self.id)
        self.broadcast(control_message({"type": "merged", "path": self.id}))
        return True

    async def _share_merge(self, change: bytes, merged: bytes, file_hash: str | None) -> bool:
        """Give the other servers a change merged from the file together with the record
        that the file was merged (``merged``, the document as of the file, and the file's
        hash), in one write; whether it was given.

        Apart, a saver that stopped between the two (killed, or cut off from Redis and
        its role taken) would leave the change with the others and the file's content
        still unmerged in the record: the next saver would merge it again, and every
        client would have it twice. Not given (another server saves the room now, or
        Redis did not answer), the room does not merge the change: whoever saves the
        room next finds it in the file.
        """
        field = self._spare_field()
        record = self._saved_record(
            field, saved=_Saved(file_hash, True, merged, None, self._saved.time)
        )
        try:
            given = await self.share_change(
                change, {field: merged, "saved": record}, expect=self._shared_record
            )
        except Exception as exc:
            # Redis may have taken it and the answer been lost: before merging the file
            # again, the record is read back (``_reload_shared_record``).
            self._shared_record_stale = True
            self.log.warning("room %r: a change made to its file is merged later: %s", self.id, exc)
            return False
        if not given:
            self._shared_record_stale = True
            self.log.info(
                "room %r: a change made to its file is left for later: another server "
                "saves the room now, or saved or merged the file meanwhile",
                self.id,
            )
            return False
        self._shared_record = record
        self._shared_field, self._shared_base = field, merged
        return True

    async def _reload_shared_record(self) -> bool:
        """Take the shared record of what the file holds as it is in Redis, after a merge
        whose sharing got no answer or a write refused for a record that changed; whether
        it could be read."""
        try:
            meta = await self.load_shared_meta()
        except Exception as exc:
            self.log.debug("room %r: cannot read the shared record yet: %s", self.id, exc)
            return False
        self._shared_record_stale = False
        if meta is not None and meta.get("epoch", b"").decode() == self.epoch:
            self._adopt_saved(meta)
        return True

    def _file_problem(self, error: str) -> None:
        if error != self._file_error:
            self.log.warning("room %r: cannot read its file: %s", self.id, error)
            self._file_error = error
            self.broadcast(control_message(self._file_error_notice()))
        self._fingerprint = None

    def _file_missing(self) -> None:
        if not self._saved.exists:
            # Not created yet: the first save creates it.
            return
        now = current_time()
        if self._missing_since is None:
            # It may be in the middle of a rename: look again before calling it deleted.
            self._missing_since = now
            return
        self._rooms.file_gone(self.id)

    def _saved_content_now(self) -> Any:
        if self._saved_content is None:
            self._saved_content = self.kind.content(_doc_of(self._saved.base))
        return self._saved_content

    def _set_saved(
        self, saved: _Saved, updates: list[bytes] | None = None, saving: int | None = None
    ) -> None:
        if saved.base is not self._saved.base:
            self._saved_content = None
        self._saved = saved
        self._publish_due = True
        if self._log is not None:
            # ``saving``: the file is yet to be written with the document as of then.
            record = None if saving is None else {"updates": saving}
            self._log_append(updates or [], meta={"saved": saved.record(), "saving": record})

    async def _save(self) -> bool:
        """Write the document to the file if it differs; whether the file now holds it."""
        for _ in range(_SAVE_ATTEMPTS):
            try:
                held = await self._save_once()
            except get_cancelled_exc_class():
                # Interrupted (the room closes): what it was to write is still to save,
                # which the room's closing does.
                self._dirty = True
                raise
            if held is not None:
                return held
        # The file keeps changing under the room: its changes are merged; save later.
        self._dirty = True
        self._retry_later()
        return False

    async def _save_once(self) -> bool | None:
        """Merge the file's changes, then write the document; whether the file now holds
        it, or ``None`` if the file changed again while the save was being prepared (then
        nothing was written)."""
        self._flush = False
        await self._check_file()
        if self._deleted:
            return False
        if (
            self._file_error is not None
            or self._missing_since is not None
            or self._shared_record_stale
        ):
            self._retry_later()
            return False
        # What the file will hold, as the record of the save will say: the content is
        # that of the document as of ``base``, taken before anything can change the
        # document (an edit that arrives while the save is prepared is saved next time,
        # and the record must not claim it, or a later merge with the file would undo
        # it).
        at, base, content = await self._snapshot()
        if self.kind.same(content, self._saved_content_now()):
            # Nothing to write (a file that does not exist yet stays so).
            if self._saved.at != at:
                self._set_saved(replace(self._saved, base=base, at=at))
                self._saved_content = content
            self._stamp_state(self._saved.hash)
            return True
        state = self.doc.get_state()
        self.kind.prepare(self.doc, content)
        if self.doc.get_state() != state:
            # Prepared (ids given, say): what it added only ever adds to the state.
            at, base, content = await self._snapshot()
        try:
            await self._validate(content)
        except DocumentError as exc:
            self.log.warning("room %r: not saved: %s", self.id, exc)
            self.broadcast(control_message({"type": "error", "reason": f"not saved: {exc}"}))
            return False
        if await self._changed_since_check():
            # Another program wrote the file while the save was being prepared (which
            # takes a while for a large notebook): writing now would undo its change.
            self._dirty = True
            return None
        if self._log is not None:
            self._log_append([], meta={"saving": {"updates": at}})
        # What the file held before this write, should another program write over it.
        before, before_content = self._saved, self._saved_content
        spare = self._spare_field()
        try:
            # Whoever saves next must be able to tell this save's file from another's.
            saving = self._saved_record(self._shared_field, saving=True)
            stored = await self._store_record({spare: base, "saved": saving})
        except Exception as exc:
            self._dirty = True
            self._retry_later()
            self.log.warning("room %r: not saved yet: %s", self.id, exc)
            return False
        if not stored:
            # Another server saved or merged the file meanwhile (the record is read again
            # first, and the file looked at), or saves the room now.
            self._dirty = True
            return None
        if not self.is_saver:
            # This server's role ran out while the save was prepared.
            self._dirty = True
            return False
        cm = self._rooms.contents_manager
        try:
            # The write and the look at what it left go together: a save cancelled in
            # between (the room closing) would leave a file the room wrote without a
            # record of it, and its next look would merge the room's own edits again.
            with CancelScope(shield=True):
                # The contents manager makes a notebook's tens of thousands of nodes
                # again (``nbformat.from_dict``, on the event loop); with the collector
                # on, a full collection among them held the loop for 150 ms or more.
                writing = _WRITING.set(self._file_identity)
                try:
                    with collector_paused():
                        answer = await ensure_async(cm.save(self.kind.to_model(content), self.id))
                finally:
                    _WRITING.reset(writing)
                self.saves += 1
                self.log.debug("room %r: saved its file", self.id)
                model, written = await self._read_content(
                    self.kind, written=answer if isinstance(answer, dict) else None
                )
        except get_cancelled_exc_class():
            raise
        except _ChangedUnderSave:
            # Nothing was written: the change is merged first, and the save made again.
            self.log.info("room %r: its file changed as it was being saved", self.id)
            self._dirty = True
            return None
        except Exception as exc:
            self._dirty = True
            self._retry_later()
            reason = exc.log_message if isinstance(exc, HTTPError) else str(exc)
            self.log.warning("room %r: saving failed: %s", self.id, reason)
            self.broadcast(control_message({"type": "error", "reason": f"not saved: {reason}"}))
            return False
        file_hash = None
        kept = model is not None and (written is _AS_WRITTEN or self.kind.same(written, content))
        if kept:
            assert model is not None
            file_hash = model.get("hash")
            self._fingerprint = _fingerprint(model)
        else:
            # Another program wrote the file (taken below), or it is gone (the next check
            # sees to that).
            self._fingerprint = None
        self.last_saved = _now_iso()
        self._set_saved(_Saved(file_hash, True, base, at, self.last_saved))
        self._saved_content = content
        self._cut_tail = None
        self._repairing = False
        self._stamp_state(file_hash)
        if model is not None and not kept:
            # Taken now, from what that program most likely read.
            self._fingerprint = _fingerprint(model)
            await self._take_written_over(model, written, content, before, before_content)
        await self._try_publish(stored_in=spare)
        self.broadcast(control_message({"type": "saved", "path": self.id, "time": self.last_saved}))
        return True

    async def _take_written_over(
        self, model: dict[str, Any], found: Any, wrote: Any, before: _Saved, before_content: Any
    ) -> None:
        """Merge the change of a program that wrote the file while the room was saving it
        (or right after): ``found`` is in the file, ``wrote`` is what the room wrote.

        That program changed whatever it read: the room's save, what the file held
        before it (``before``), or, since contents managers write files in place (they
        empty the file, then write it), a text file the save had just emptied. Merged
        from the wrong one of these, its change would delete what it never saw: the
        room's edits since its last save, or the whole file. So it is merged from the
        one that makes it the smallest, deleting counting double; the room then writes
        the file again with everything. A file still being written (it changed again a
        moment later: what was read may be its emptied or half-written state) is left
        to the next look, as any change.
        """
        if isinstance(found, str) and not found:
            # Most likely emptied by a program starting to write it in place: the next
            # look at the file takes what it holds then, as any change.
            self._fingerprint = None
            return
        await sleep(_SETTLE)
        try:
            again = await self._read(self.kind, content=False, hash=False)
        except _FileUnreadable:
            again = None
        if again is None or _fingerprint(again) != _fingerprint(model):
            # Still being written (or gone): the next look at the file takes it.
            self._fingerprint = None
            return
        if before_content is None:
            before_content = self.kind.content(_doc_of(before.base))
        candidates = {"save": wrote, "before": before_content}
        if isinstance(found, str):
            candidates["emptied"] = ""

        def costs() -> dict[str, int]:
            changes = {name: self.kind.change(it, found) for name, it in candidates.items()}
            return {name: 2 * deleted + added for name, (deleted, added) in changes.items()}

        # Comparing a large file's contents takes a while: not on the event loop.
        cost = costs() if self._rooms.stopping else await to_thread.run_sync(costs)
        # The room's save first: among equals, the file is taken to have followed it.
        read = min(cost, key=cost.__getitem__)
        self.log.warning(
            "room %r: another program wrote the file during or right after the room's "
            "save; its change is merged as made to %s",
            self.id,
            {
                "save": "the room's save",
                "before": "the file as it was before the save",
                "emptied": "the file emptied by the save, before it was written",
            }[read],
        )
        if read == "before":
            self._set_saved(replace(before, hash=None))
            self._saved_content = before_content
            # The file lacks what the room saved since.
            self._dirty = True
        elif read == "emptied":
            # As for a save cut short (to nothing): the save goes back after the change.
            self._cut_tail = wrote
            self._repairing = True
        await self._take_file(model, found)

    async def _snapshot(self) -> tuple[int, bytes, Any]:
        """The document as the next save writes it: its place in the log, its update,
        and its content.

        A large document's content is read, from its update, in a worker thread: reading
        a 2,000-cell notebook takes a tenth of a second, which the event loop (every
        other room's clients) would otherwise wait for at each save. Not while the
        server stops: threads started then may never be waited for.
        """
        self._dirty = False
        at, base = self._log_updates, self.doc.get_update()
        if not self.kind.heavy or self._rooms.stopping:
            return at, base, self.kind.content(self.doc)
        content = await to_thread.run_sync(_content_of, self.kind, base)
        return at, base, content

    async def _validate(self, content: Any) -> None:
        """Check that ``content`` may be written, as ``_snapshot`` reads it (only what
        changed since the last content that passed, for a notebook)."""
        if not self.kind.heavy or self._rooms.stopping:
            self.kind.validate(content, self._validated)
        else:
            await to_thread.run_sync(self.kind.validate, content, self._validated)
        self._validated = content

    async def _changed_since_check(self) -> bool:
        """Whether the file changed since the room last looked at it (a cheap look)."""
        self._file_identity = None
        if self._rooms.reads_notebooks:
            # What the file is now, for the save's own last look (``_guard_writes``).
            try:
                os_path = self._rooms.contents_manager._get_os_path(self.id)
                self._file_identity = (os_path, _identity(os_path))
            except (HTTPError, OSError):
                pass
        try:
            model = await self._read(self.kind, content=False, hash=False)
        except _FileUnreadable:
            return True
        if model is None:
            return self._fingerprint is not None
        return _fingerprint(model) != self._fingerprint

    # What JupyterLab's documents keep beside their content (jupyter_ydoc's ``state`` map)

    def _stamp_state(self, file_hash: str | None = None, path: str | None = None) -> None:
        """Tell clients the file's hash after a save (its editors compare it with the file's
        before their next save) and the file's path after a rename. This bookkeeping is
        not a change to save."""
        if self.kind.name == "room":
            return
        state = self.doc.get("state", type=Map)
        changes: dict[str, Any] = {}
        if file_hash is not None:
            if state.get("hash") != file_hash:
                changes["hash"] = file_hash
            if state.get("dirty") is not False:
                changes["dirty"] = False
        if path is not None and state.get("path") != path:
            changes["path"] = path
        if not changes:
            return
        clean = self._saved.at == self._log_updates
        self._stamping = True
        try:
            with self.doc.transaction():
                for key, value in changes.items():
                    state[key] = value
        finally:
            self._stamping = False
        if clean and self._log is not None:
            # The stamp is not content: the file still holds the document as saved.
            # Saying so now spares the next opening a record of its own (a read-only
            # visit then changes nothing on disk).
            self._set_saved(replace(self._saved, at=self._log_updates))

    # Requests from clients

    async def save_now(self) -> str:
        """Save at once, as the room's saver does (never beside it), and wait for the end.

        Returns:
            ``"success"`` when the file holds the document (written now, or already
            holding it), ``"failed"`` otherwise (clients get the reason as a notice).
        """
        request = _SaveRequest()
        self._save_requests.append(request)
        self._wake_up()
        await request.done.wait()
        return request.status

    def on_message(self, client: Channel, message: Message) -> None:
        """Answer JupyterLab's save requests (RAW ``save`` and a number).

        Args:
            client: The channel the message came from.
            message: The parsed message.
        """
        if message.type != MessageType.RAW:
            super().on_message(client, message)
            return
        try:
            name, number = parse_raw_request(message.payload)
        except ProtocolError as exc:
            self.log.debug("room %r: ignoring a RAW message: %s", self.id, exc)
            return
        if name == "save" and number is not None:
            self.task_group.start_soon(self._answer_save, client, number)

    def on_rejected_update(self, client: Channel, error: ProtocolError) -> bool:
        """Tell a JupyterLab page whose changes cannot be applied, and keep it (it offers
        the person to save their copy elsewhere, or to revert); disconnect other clients.

        Args:
            client: The channel the update came from.
            error: Why it cannot be applied.

        Returns:
            Whether the client stays connected.
        """
        if not getattr(client, "reports_conflicts", False):
            return False
        self.log.warning("room %r: a page's changes cannot be applied: %s", self.id, error)
        self.send(client, raw_message(json.dumps({"type": "conflict"})))
        return True

    async def _answer_save(self, client: Channel, number: int) -> None:
        status = await self.save_now()
        reply = {"type": "save", "responseTo": number, "status": status}
        self.send(client, raw_message(json.dumps(reply)))

    def _maybe_compact(self, updatelog: UpdateLog | None = None) -> None:
        updatelog = updatelog or self._log
        if updatelog is None or self._first_write_over is not None or self._repairing:
            # Not while the first record is being written, nor while the log's record
            # of a save cut short is what tells a restart to write the file again.
            return
        if updatelog.size <= self._compact_at:
            return
        saved = self._saved
        at = 1 if saved.at == self._log_updates else None
        self._saved = replace(saved, at=at)
        updatelog.rewrite(self.doc.get_update(), self._meta(), time=self._stamp(force=True))
        self._log_updates = 1
        self._compact_at = max(self._rooms.compact_size, COMPACT_GROWTH * updatelog.size)

    # Renames

    def move_log(self, new_path: Path, new_id: str) -> None:
        """Move the room's log along with its file (the room is being renamed).

        Args:
            new_path: Where the log goes.
            new_id: The room's new id.
        """
        if self._log is not None:
            self._log.close()
            if self._log.path.exists() and self._log.path != new_path:
                new_path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self._log.path, new_path)
            self._log = UpdateLog(new_path)
            self._log.append(meta={"path": new_id})
        self._stamp_state(path=new_id)


class _Ready:
    """The task status of a task started by hand: resolves a future when started."""

    def __init__(self, future: asyncio.Future[None]) -> None:
        self._future = future

    def started(self, value: None = None) -> None:
        if not self._future.done():
            self._future.set_result(None)


class FileRooms:
    """The rooms of a Jupyter server, each bound to the file its id names.

    It owns the room manager and the tasks that serve clients; run it with
    ``await rooms.start()`` / ``await rooms.stop()`` (or ``run``) in the server's loop.

    Args:
        contents_manager: The server's contents manager (sync or async).
        log_dir: Where rooms' update logs go; one sub-directory per server root.
        save_delay: Seconds after a change before a room saves its file.
        poll_interval: Seconds between two looks at an open room's file for changes made
            by others; ``0`` looks only before saving.
        cleanup_delay: Seconds a room stays open after its last client left.
        max_backlog: Messages that may wait for one client before it is dropped as too slow.
        compact_size: Log size in bytes above which a room's log may be compacted.
        shutdown_timeout: Seconds a room may take to save when it closes.
        room_class: The class of the rooms (``FileRoom`` or a subclass).
        room_factory: Builds the rooms instead of ``room_class`` (a room's id and the
            class's keyword arguments in, a ``FileRoom`` out), as
            [redis_room_factory][jupyter_rooms.redis.redis_room_factory] does.
        logger: Where to log.
    """

    def __init__(
        self,
        contents_manager: Any,
        *,
        log_dir: str | os.PathLike[str],
        save_delay: float = 1.0,
        poll_interval: float = 1.0,
        cleanup_delay: float = 60.0,
        max_backlog: int = 1024,
        compact_size: int = DEFAULT_COMPACT_SIZE,
        shutdown_timeout: float = 10.0,
        room_class: type[FileRoom] = FileRoom,
        room_factory: Callable[..., Room] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.contents_manager = contents_manager
        self.save_delay = save_delay
        self.poll_interval = poll_interval
        self.max_backlog = max_backlog
        self.compact_size = compact_size
        self.shutdown_timeout = shutdown_timeout
        self.room_class = room_class
        self.room_factory: Callable[..., Room] = room_factory or room_class
        self.log = logger or log
        self.reads_notebooks = _reads_notebooks(contents_manager)
        if self.reads_notebooks:
            _guard_writes(contents_manager)
        root = os.path.realpath(getattr(contents_manager, "root_dir", "") or "")
        self.root_dir = root
        key = hashlib.sha256(root.encode()).hexdigest()[:16]
        self.log_root = Path(log_dir) / key
        # No room may be bound to a file among the logs: where every server keeps them,
        # or, if that holds the root, where this server does.
        logs = os.path.realpath(log_dir)
        self._logs_kept = logs if not _within(root, logs) else os.path.join(logs, key)
        self._manager = RoomManager(self._make_room, cleanup_delay=cleanup_delay)
        # Rooms bound to no file (JupyterLab's global awareness): gone with their last client.
        self._transient = RoomManager(Room)
        # Forks of rooms (for their timelines, or made by extensions), by id, and the
        # rooms that serve them.
        self._forks: dict[str, Fork | Branch] = {}
        # The file rooms that extensions' forks hold open, by fork id.
        self._held_by_forks: dict[str, Room] = {}
        self._fork_rooms = RoomManager(
            lambda fork_id: _ForkRoom(self._forks[fork_id], self._forks),
            cleanup_delay=FORK_LINGER,
        )
        self._task_group: TaskGroup | None = None
        self._stop: Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopped = False
        # Epochs given to sessions of rooms that have not opened yet (see
        # ``session_epoch``), by room id.
        self._promises: dict[str, str] = {}

    @property
    def stopping(self) -> bool:
        """Whether the rooms are stopping (or stopped): they save and close."""
        return self._stopped

    @property
    def manager(self) -> RoomManager:
        """The room manager."""
        return self._manager

    def _make_room(self, id: str) -> Room:
        return self.room_factory(id, rooms=self, max_backlog=self.max_backlog)

    def log_path(self, room_id: str) -> Path:
        """Where the log of a room goes.

        Args:
            room_id: The room's id (a normalised path).

        Returns:
            The log's path: the file's path under this root's log directory, plus ``.ylog``.
        """
        return self.log_root / (room_id + LOG_SUFFIX)

    def forget_log(self, room_id: str) -> None:
        """Remove the log of one room, and the directories that held only it.

        Args:
            room_id: The room's id (a normalised path).
        """
        path = self.log_path(room_id)
        path.unlink(missing_ok=True)
        for parent in path.parents:
            if parent == self.log_root or self.log_root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def relative(self, message: str) -> str:
        """Take the server's own directories out of a message meant for clients.

        Args:
            message: A message that may name files by their absolute paths.

        Returns:
            The message, with paths relative to the root (a log's, to the logs' directory).
        """
        message = message.replace(str(self.log_root).rstrip(os.sep) + os.sep, "")
        if self.root_dir and os.path.isdir(self.root_dir):
            message = message.replace(self.root_dir.rstrip(os.sep) + os.sep, "")
        return message

    def remove_logs(self, path: str) -> None:
        """Remove the logs of a file, or of every file under a directory.

        Args:
            path: A normalised path.
        """
        self.log_path(path).unlink(missing_ok=True)
        shutil.rmtree(self.log_root / path, ignore_errors=True)

    # Lifetime

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        """Serve rooms until ``stop`` is called; then save and close every room.

        Args:
            task_status: Set once clients can be served.
        """
        self._stop = Event()
        async with self._manager, self._transient, self._fork_rooms, task_group() as tg:
            self._task_group = tg
            task_status.started()
            try:
                await self._stop.wait()
            finally:
                self._task_group = None
                with CancelScope(shield=True):
                    async with create_task_group() as closing:
                        for room_id in list(self._manager.rooms):
                            closing.start_soon(self._manager.close_room, room_id)
                tg.cancel_scope.cancel()

    async def start(self) -> None:
        """Start serving in a task of the running asyncio loop that ``stop`` ends.

        Calls after the first return at once.

        Raises:
            RuntimeError: The rooms were stopped (the server is stopping).
        """
        if self._stopped:
            raise RuntimeError("the rooms were stopped: the server is stopping")
        if self._runner is not None:
            return
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._runner = runner = loop.create_task(self.run(task_status=_Ready(ready)))
        await asyncio.wait([ready, runner], return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            self._runner = None
            runner.result()

    async def stop(self) -> None:
        """Save and close every room, and stop serving."""
        self._stopped = True
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._stop is not None:
            self._stop.set()
        await runner

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FileRooms]:
        """Serve rooms for the duration of a block.

        Yields:
            These rooms.
        """
        async with create_task_group() as tg:
            await tg.start(self.run)
            try:
                yield self
            finally:
                if self._stop is not None:
                    self._stop.set()

    # Clients

    async def resolve(self, path: str) -> str:
        """Check that a path may have a room, before anything is opened or created.

        Args:
            path: The path the client asked for (URL-decoded), relative to the root.

        Returns:
            The room's id: the path normalised like the contents manager does.

        Raises:
            RoomPathError: The path is absolute, leaves the root (``..``, a symlink out),
                is hidden while hidden files are not allowed, is a directory or a special
                file (a FIFO, a device), is in the log directory (when ``log_dir`` is put
                under the root), or its directory does not exist.
        """
        if "\x00" in path or "\\" in path:
            raise RoomPathError(400, f"invalid path {path!r}")
        if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
            raise RoomPathError(400, f"{path!r} is absolute: give a path relative to the root")
        parts = [part for part in path.split("/") if part]
        if not parts:
            raise RoomPathError(400, "no path given: rooms are at api/rooms/{path}")
        if any(part in (".", "..") for part in parts):
            raise RoomPathError(400, f"{path!r} is not a plain path under the root")
        room_id = "/".join(parts)
        try:
            await self._check_path(room_id, parts)
        except OSError as exc:
            # A symlink loop, a name too long...: the contents manager cannot look at it.
            raise RoomPathError(400, f"{room_id} cannot be opened: {exc.strerror or exc}") from None
        return room_id

    async def _check_path(self, room_id: str, parts: list[str]) -> None:
        cm = self.contents_manager
        if not getattr(cm, "allow_hidden", False):
            hidden = any(part.startswith(".") for part in parts)
            if not hidden and await ensure_async(cm.exists(room_id)):
                hidden = await ensure_async(cm.is_hidden(room_id))
            if hidden:
                raise RoomPathError(403, f"{room_id} is hidden and hidden files are not allowed")
        if self._leaves_root(parts):
            raise RoomPathError(403, f"{room_id} leads outside the root")
        if self._in_log_dir(parts):
            # A room bound to a log would write over the history of another room.
            raise RoomPathError(403, f"{room_id} is in the rooms' log directory")
        if await ensure_async(cm.dir_exists(room_id)):
            raise RoomPathError(400, f"{room_id} is a directory")
        if self._is_special(parts):
            raise RoomPathError(400, f"{room_id} is not a regular file")
        parent = "/".join(parts[:-1])
        if parent and not await ensure_async(cm.dir_exists(parent)):
            raise RoomPathError(404, f"the directory {parent} does not exist")

    def _leaves_root(self, parts: list[str]) -> bool:
        """Whether a path under a local root resolves (through symlinks) outside it."""
        if not self.root_dir or not os.path.isdir(self.root_dir):
            return False
        real = os.path.realpath(os.path.join(self.root_dir, *parts))
        return not real.startswith(self.root_dir.rstrip(os.sep) + os.sep)

    def _in_log_dir(self, parts: list[str]) -> bool:
        """Whether a path under a local root is (through symlinks) in the log directory."""
        if not self.root_dir or not os.path.isdir(self.root_dir):
            return False
        return _within(os.path.realpath(os.path.join(self.root_dir, *parts)), self._logs_kept)

    def _is_special(self, parts: list[str]) -> bool:
        """Whether a path under a local root is a FIFO, a device or a socket: reading
        one may block or never end, and saving would replace it with a file."""
        if not self.root_dir or not os.path.isdir(self.root_dir):
            return False
        try:
            mode = os.stat(os.path.join(self.root_dir, *parts)).st_mode
        except FileNotFoundError:
            return False
        return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))

    def serve(self, room_id: str, channel: Channel, *, read_only: bool = False) -> None:
        """Serve a client in a room, in the background.

        Args:
            room_id: A room id, as ``resolve`` returns it.
            channel: The channel to the client.
            read_only: Refuse the client's updates.

        Raises:
            RuntimeError: The rooms are not running.
        """
        if self._task_group is None:
            raise RuntimeError("the rooms are not running")
        self._task_group.start_soon(self._serve_one, room_id, channel, read_only)

    def serve_transient(self, room_id: str, channel: Channel) -> None:
        """Serve a client in a room bound to no file, in the background: presence only
        (its document's changes are refused), gone when its last client leaves.

        Args:
            room_id: Any id; it names no file.
            channel: The channel to the client.

        Raises:
            RuntimeError: The rooms are not running.
        """
        if self._task_group is None:
            raise RuntimeError("the rooms are not running")
        self._task_group.start_soon(self._serve_transient, room_id, channel)

    async def _serve_transient(self, room_id: str, channel: Channel) -> None:
        try:
            if room_id in self._forks:
                # A page looking through a file's timeline: its document moves with the
                # fork's, and what it changes stays in the fork unless it is restored.
                await self._fork_rooms.serve(room_id, channel)
                return
            await self._transient.serve(room_id, channel, read_only=True)
        except get_cancelled_exc_class():
            raise
        except Exception as exc:
            self.log.exception("room %r failed", room_id)
            await channel.close(1011, f"server error: {exc}")

    async def timeline(self, room_id: str) -> Fork:
        """Fork a file's room for its timeline: a copy of its document, with its history
        in steps, served as a room of its own (the fork's id), which lasts until a while
        after its last client left (``FORK_LINGER``).

        Args:
            room_id: A room id, as ``resolve`` returns it, of a file that exists.

        Returns:
            The fork, at the newest step.

        Raises:
            ForkError: The room keeps no history here, or too many forks are open.
            RoomOpenError: The room cannot be opened.
            RuntimeError: The rooms are not running.
        """
        room = await self.visit(room_id)
        self._check_fork_limit("timelines", "close")
        try:
            history = await room.history()
        except (LogFormatError, OSError) as exc:
            raise ForkError(409, f"cannot read the history of {room_id}: {exc}") from None
        if history is None or not history.updates or room.kind.content_roots is None:
            raise ForkError(409, f"this server keeps no timeline of {room_id}")
        fork_id = uuid4().hex
        fork = await to_thread.run_sync(
            build_fork, fork_id, room.id, room.epoch, room.kind, history
        )
        if not fork.times:
            # Nothing but bookkeeping so far (an empty file no one has written in).
            raise ForkError(409, f"{room_id} has no content in its history yet")
        self._forks[fork_id] = fork
        # Open now: the page connects next (the room waits for it for FORK_LINGER).
        await self._fork_rooms.acquire(fork_id)
        self._fork_rooms.release(fork_id)
        self.log.info(
            "room %r: timeline of %d steps opened as %s", room_id, len(fork.times), fork_id
        )
        return fork

    def _check_fork_limit(self, forks: str, undo: str) -> None:
        """Refuse another fork (503) once the server keeps ``MAX_FORKS`` of them (timelines'
        and extensions' alike); ``forks`` and ``undo`` name them and what frees one."""
        if len(self._forks) >= MAX_FORKS:
            raise ForkError(
                503, f"{MAX_FORKS} {forks} are open on this server; {undo} one and try again"
            )

    def timeline_fork(self, fork_id: str) -> Fork | None:
        """A timeline's fork, if it is still there.

        Args:
            fork_id: The fork's id.

        Returns:
            The fork; ``None`` if there is no timeline's fork by that id (any more).
        """
        fork = self._forks.get(fork_id)
        return fork if isinstance(fork, Fork) else None

    async def create_fork(self, room_id: str, info: dict[str, Any]) -> Branch:
        """Fork a file's room for an extension: a copy of its document, served as a room
        of its own (the fork's id) until ``delete_fork``. The file's room stays open
        meanwhile.

        Args:
            room_id: A room id, as ``resolve`` returns it, of a file that exists.
            info: What the API answers of the fork (``root_roomid``, ``synchronize``,
                ``title``, ``description``); with ``synchronize``, the room's changes
                are applied to the fork as they are made.

        Returns:
            The fork.

        Raises:
            ForkError: Too many forks are open.
            RoomOpenError: The room cannot be opened.
            RuntimeError: The rooms are not running.
        """
        self._check_fork_limit("forks", "delete")
        room = await self._manager.acquire(room_id)
        doc: Doc = Doc()
        doc.apply_update(room.doc.get_update())
        branch = Branch(uuid4().hex, room.id, getattr(room, "epoch", ""), doc, dict(info))
        if info.get("synchronize"):
            branch.follow(room.doc)
        self._forks[branch.id] = branch
        self._held_by_forks[branch.id] = room
        try:
            # Kept open until deleted, whether anyone is in it or not.
            await self._fork_rooms.acquire(branch.id)
        except BaseException:
            branch.close()
            self._forks.pop(branch.id, None)
            self._held_by_forks.pop(branch.id, None)
            self._manager.release(room.id)
            raise
        self.log.info("room %r: forked as %s", room_id, branch.id)
        return branch

    def forks_of(self, room_id: str) -> list[Branch]:
        """The forks extensions made of a room.

        Args:
            room_id: The room's id.

        Returns:
            Its forks, oldest first.
        """
        return [
            fork
            for fork in self._forks.values()
            if isinstance(fork, Branch) and fork.room_id == room_id
        ]

    async def delete_fork(self, fork_id: str, *, merge: bool) -> Branch:
        """Delete a fork an extension made, merging it into its room first if asked.

        Args:
            fork_id: The fork's id.
            merge: Apply what was changed in the fork to the room (merged with what
                changed there meanwhile).

        Returns:
            The deleted fork.

        Raises:
            ForkError: No such fork (404), or its room's history started afresh
                since it was made (409; the fork is left as it was).
        """
        branch = self._forks.get(fork_id)
        if not isinstance(branch, Branch):
            raise ForkError(404, f"no fork {fork_id[:40]!r} made with api/collaboration/fork")
        if merge:
            await self._merge(branch)
        branch.close()
        self._forks.pop(fork_id, None)
        await self._fork_rooms.close_room(fork_id)
        held = self._held_by_forks.pop(fork_id, None)
        if held is not None and self._manager.rooms.get(held.id) is held:
            # Not if it closed meanwhile (its file was deleted): the room open now under
            # its id is another, which this fork never held.
            self._manager.release(held.id)
        self.log.info(
            "room %r: fork %s deleted%s", branch.room_id, fork_id, " and merged" if merge else ""
        )
        return branch

    async def restore(self, fork: Fork) -> None:
        """Make the version a fork shows the room's: the steps it went back are undone
        in the room, along with what was changed in the fork, and merged with what
        changed in the room since the fork was made.

        Args:
            fork: The fork.

        Raises:
            ForkError: The fork was restored already, or the room's history started
                afresh since it was made.
            RoomOpenError: The room cannot be opened.
        """
        if fork.restored:
            raise ForkError(409, "this version was restored already")
        room = await self._merge(fork)
        fork.restored = True
        when = datetime.fromtimestamp(fork.times[fork.step]).isoformat(" ", "seconds")
        self.log.info(
            "room %r: restored its version of %s (step %d of %d)",
            room.id,
            when,
            fork.step + 1,
            len(fork.times),
        )

    async def _merge(self, fork: Fork | Branch) -> FileRoom:
        """Apply to a fork's room what the fork has and the room lacks (the fork's own
        changes, merged with what changed in the room since it was made)."""
        room = await self.visit(fork.room_id)
        if room.epoch != fork.epoch:
            raise ForkError(409, f"the history of {fork.room_id} started afresh since")
        room.doc.apply_update(fork.doc.get_update(room.doc.get_state()))
        return room

    async def visit(self, room_id: str) -> FileRoom:
        """Open a file's room if it is not open, and return it.

        The room stays open as long as any room with no client does (``cleanup_delay``).

        Args:
            room_id: A room id, as ``resolve`` returns it.

        Returns:
            The room (its ``epoch`` changes only when its history starts afresh).

        Raises:
            RoomOpenError: The room cannot be opened.
            RuntimeError: The rooms are not running.
        """
        if self._task_group is None:
            raise RuntimeError("the rooms are not running")
        async with self._manager.use(room_id) as room:
            assert isinstance(room, FileRoom)
            return room

    async def session_epoch(self, room_id: str) -> str:
        """The epoch a client that joins a file's room next will find there (the session
        id of JupyterLab's front end), opening the room if it is not open.

        A room that will start afresh (this server kept no history for it, and it is not
        shared with other servers) is given its epoch before it opens, and the session is
        answered at once: the server reads the file and builds the document while the
        page sets up its own document and socket. A file that cannot be opened is then
        told on the socket, which the page shows (see ``CollaborationRoomHandler``). Any
        other room is opened first, since its epoch is in its history.

        Args:
            room_id: A room id, as ``resolve`` returns it, of a file that exists.

        Returns:
            The epoch.

        Raises:
            RoomOpenError: The room, opened first, cannot be opened.
            RuntimeError: The rooms are not running.
        """
        if self._task_group is None:
            raise RuntimeError("the rooms are not running")
        room = self.open_room(room_id)
        if room is not None:
            return room.epoch
        alone = getattr(self.room_factory, "load_shared_meta", None) is FileRoom.load_shared_meta
        if not alone or self._manager.has(room_id) or self.log_path(room_id).exists():
            return (await self.visit(room_id)).epoch
        epoch = self._promises.get(room_id)
        if epoch is None:
            epoch = self._promises[room_id] = uuid4().hex
            self._task_group.start_soon(self._open_promised, room_id, epoch)
        return epoch

    async def _open_promised(self, room_id: str, epoch: str) -> None:
        try:
            await self.visit(room_id)
        except RoomOpenError as exc:
            # The page's socket tries again, and is told why it cannot join.
            self.log.warning("room %r: %s", room_id, exc)
        except Exception:
            # One room's failure must not end the task group that serves every room;
            # rooms that stop meanwhile (``visit`` refuses then) are no failure.
            if not self.stopping:
                self.log.exception("room %r: opening it failed", room_id)
        finally:
            if self._promises.get(room_id) == epoch:
                del self._promises[room_id]

    def promised_epoch(self, room_id: str) -> str | None:
        """The epoch given to the sessions of a room before it opened, until it is open.

        Args:
            room_id: The room's id.

        Returns:
            The epoch (``None``: the room is open, or no session was given one).
        """
        return self._promises.get(room_id)

    def open_room(self, room_id: str) -> FileRoom | None:
        """The open room of a file, if it is open.

        Args:
            room_id: A room id.

        Returns:
            The room, or ``None``.
        """
        room = self._manager.rooms.get(room_id)
        return room if isinstance(room, FileRoom) else None

    async def _serve_one(self, room_id: str, channel: Channel, read_only: bool) -> None:
        try:
            await self._manager.serve(room_id, channel, read_only=read_only)
        except get_cancelled_exc_class():
            raise
        except RoomOpenError as exc:
            self.log.warning("room %r: %s", room_id, exc)
            await channel.close(CLOSE_CANNOT_OPEN, self.relative(str(exc)))
        except Exception as exc:
            self.log.exception("room %r failed", room_id)
            await channel.close(1011, self.relative(f"server error: {exc}"))

    def info(self) -> list[dict[str, Any]]:
        """Describe the open rooms.

        Returns:
            One dict per room: ``id``, ``clients``, ``unsaved``, ``last_saved``, ``epoch``,
            ``kind``, ``saver`` (whether this server saves the room: always, unless it is
            shared with other servers) and ``saves`` (how often this server wrote the file).
        """
        rooms = []
        for room_id, room in sorted(self._manager.rooms.items()):
            if isinstance(room, FileRoom):
                rooms.append(
                    {
                        "id": room_id,
                        "clients": room.client_count,
                        "unsaved": room.unsaved,
                        "last_saved": room.last_saved,
                        "epoch": room.epoch,
                        "kind": room.kind.name,
                        "saver": room.is_saver,
                        "saves": room.saves,
                    }
                )
        return rooms

    # What the contents manager tells

    def _rooms_under(self, path: str) -> list[FileRoom]:
        return [
            room
            for room_id, room in self._manager.rooms.items()
            if isinstance(room, FileRoom) and (room_id == path or room_id.startswith(path + "/"))
        ]

    def file_gone(self, path: str) -> None:
        """Close the rooms of a deleted file or directory and drop their history.

        Args:
            path: The deleted path (normalised).
        """
        for room in self._rooms_under(path):
            room.close_deleted(f"{room.id} was deleted")
        if self._task_group is not None:
            self._task_group.start_soon(self._close_deleted, path)
        else:
            self.remove_logs(path)

    async def _close_deleted(self, path: str) -> None:
        async with create_task_group() as tg:
            for room in self._rooms_under(path):
                tg.start_soon(self._manager.close_room, room.id)
        self.remove_logs(path)

    async def file_renamed(self, old: str, new: str) -> None:
        """Move the rooms (and logs) of a renamed file or directory to its new path.

        Args:
            old: The path before (normalised).
            new: The path after (normalised).
        """
        if not old or not new or old == new:
            return
        # A room open under the new path was for a file that did not exist (or the
        # rename would have failed): the renamed file replaces it.
        replaced = self._rooms_under(new)
        for room in replaced:
            room.close_deleted(f"{room.id} was replaced by {old}, renamed to it")
        async with create_task_group() as tg:
            for room in replaced:
                tg.start_soon(self._manager.close_room, room.id)
        self.remove_logs(new)
        moving = self._rooms_under(old)
        for room in moving:
            # A new epoch's first record may be on its way to the old path.
            await room.write_history()
        old_log, new_log = self.log_path(old), self.log_path(new)
        if old_log.exists():
            new_log.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old_log, new_log)
        if (self.log_root / old).is_dir():
            (self.log_root / new).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.log_root / old, self.log_root / new)
        for room in moving:
            old_id, new_id = room.id, new + room.id[len(old) :]
            self._manager.rename_room(old_id, new_id)
            room.move_log(self.log_path(new_id), new_id)
            for fork in self._forks.values():
                if fork.room_id == old_id:
                    fork.room_id = new_id
            self.log.info("room %r: renamed to %r with its file", old_id, new_id)

    def file_saved(self, path: str) -> None:
        """Have the room of a file saved through the server compare itself with it now.

        Args:
            path: The saved path (normalised).
        """
        room = self._manager.rooms.get(path)
        if isinstance(room, FileRoom):
            room.check_file_soon()

    async def on_contents_event(self, data: dict[str, Any]) -> None:
        """React to a contents manager event (rename, delete, save).

        Args:
            data: The event's data: ``action``, ``path``, and ``source_path`` for renames.
        """
        action = data.get("action")
        path = normalize_path(str(data.get("path") or ""))
        if action == "rename":
            await self.file_renamed(normalize_path(str(data.get("source_path") or "")), path)
        elif action == "delete" and path:
            self.file_gone(path)
        elif action in ("save", "upload") and path:
            self.file_saved(path)
