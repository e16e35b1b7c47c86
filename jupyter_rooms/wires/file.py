"""The file wire: a document persisted as an update log.

``connect("file", doc=doc, path="notes.ylog")`` loads what the log holds into ``doc``
and appends every later change of ``doc`` to it. See
[UpdateLog][jupyter_rooms.updatelog.UpdateLog] for the format and what survives a crash.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import CancelScope, Event, sleep, to_thread
from pycrdt import Doc, TransactionEvent, get_state, merge_updates

from .._tasks import task_group
from ..protocol import EMPTY_UPDATE
from ..updatelog import UpdateLog
from ..wire import ClientStatus, ClientWire

__all__ = ["FileClient", "TruncatedLogWarning"]

log = logging.getLogger("jupyter_rooms.file")


class TruncatedLogWarning(UserWarning):
    """A log ended in a record cut short or damaged; the records before it were loaded."""


class FileClient(ClientWire):
    """Keeps a document in an update log: ``connect("file", doc=..., path=...)``.

    Only one client should write a given log at a time.

    Args:
        id: Unused by this wire (the log is named by ``path``); kept for the common API.
        doc: The document to persist; a new one by default. Its content is merged with
            what the log holds, and what it had that the log lacked is appended.
        path: The log's file; it and its directory are created when first written.
        write_delay: Seconds to gather changes before writing them together; ``0`` writes
            each change as it is made. A write that fails (a full disk) is tried again
            with the next change and on closing; with ``0`` it raises from the edit, in
            the ``ExceptionGroup`` pycrdt raises for observers, and with a delay the
            ``OSError`` ends the client's block.
        squash: Compact the log into one update when opening and when closing.
        auto_push: Write changes as they are made; otherwise on ``push()``.
    """

    def __init__(
        self,
        *,
        id: str = "",
        doc: Doc | None = None,
        path: str | os.PathLike[str],
        write_delay: float = 0.0,
        squash: bool = False,
        auto_push: bool = True,
    ) -> None:
        super().__init__(id=id, doc=doc, auto_push=auto_push)
        self.path = path
        self.write_delay = write_delay
        self.squash = squash
        self._log = UpdateLog(path)
        self._pending: list[bytes] = []
        self._pending_event = Event()
        self._applying = False

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[FileClient]:
        contents = await to_thread.run_sync(self._log.load)
        if contents.truncated:
            warnings.warn(
                f"{self.path}: the log ended in a cut or damaged record; loaded the "
                f"{len(contents.updates)} complete updates before it",
                TruncatedLogWarning,
                stacklevel=2,
            )
        log_state = b"\x00"
        if contents.updates:
            merged = merge_updates(*contents.updates)
            log_state = get_state(merged)
            self._applying = True
            try:
                self._doc.apply_update(merged)
            finally:
                self._applying = False
        if self.squash:
            await to_thread.run_sync(self._log.rewrite, self._doc.get_update(), contents.meta)
        else:
            missing = self._doc.get_update(log_state)
            if missing != EMPTY_UPDATE:
                self._log.append([missing])
        subscription = self._doc.observe(self._on_update)
        try:
            async with task_group() as tg:
                if self.write_delay > 0 and self.auto_push:
                    tg.start_soon(self._write_later)
                self.synchronized.set()
                self._notify(ClientStatus.SYNCHRONIZED)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._doc.unobserve(subscription)
            with CancelScope(shield=True):
                try:
                    self._flush()
                    if self.squash:
                        await to_thread.run_sync(
                            self._log.rewrite, self._doc.get_update(), contents.meta
                        )
                finally:
                    self._log.close()
                    self.synchronized.clear()
                    self._notify(ClientStatus.CLOSED)

    def _on_update(self, event: TransactionEvent) -> None:
        if self._applying or event.update == EMPTY_UPDATE:
            return
        self._pending.append(event.update)
        if self.auto_push and self.write_delay <= 0:
            self._flush()
        else:
            self._pending_event.set()

    async def _write_later(self) -> None:
        while True:
            await self._pending_event.wait()
            await sleep(self.write_delay)
            self._pending_event = Event()
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            pending = self._pending
            update = pending[0] if len(pending) == 1 else merge_updates(*pending)
            # Until it is written, the change stays pending: a write that fails (a full
            # disk) is tried again with the next one, so no later change is logged
            # without those it builds on.
            self._pending = [update]
            self._log.append([update])
            self._pending = []

    async def push(self) -> None:
        """Write the changes made since the last push (with ``auto_push=False``)."""
        self._flush()
