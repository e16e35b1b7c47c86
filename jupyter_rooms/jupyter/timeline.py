"""Timelines of file rooms: a room's history, one step at a time, in a copy of its document.

JupyterLab's document timeline (the clock that jupyter-docprovider puts in the status
bar) asks the server for a file's timeline, connects the page's document to a copy of
the room's document (a fork) instead of the room, moves the copy back and forth through
the history, and asks for the version on screen to be restored into the room.

The history is what the room's update log keeps since it was last compacted. The log
stamps its updates with the time they were made, at most once a second; a step of the
timeline is what changed in the file's content between two stamps (changes to anything
else, such as JupyterLab's ``state`` map, make no step of their own). The fork replays
the steps into a document of its own, and going back a step undoes one, as an editor's
undo does: the undoing is a change like any other, which the page receives, and which
restoring applies to the room.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pycrdt import Doc, UndoManager, merge_updates

from ..updatelog import LogContents
from .documents import DocumentKind

__all__ = ["Fork", "build_fork"]

# The origin of the transactions that replay the history into a fork: the only ones its
# undo manager follows (not those of the page connected to it).
_HISTORY = "jupyter_rooms.timeline"


@dataclass(eq=False)
class Fork:
    """A copy of a room's document, at one step of the room's history.

    Attributes:
        id: The fork's id, which is the id of the room that serves it.
        room_id: The id of the file room it is a copy of.
        epoch: That room's epoch when the fork was made.
        doc: The copy.
        times: When each step was made (seconds since the epoch), oldest first.
        restored: Whether the version it showed was restored into the room (it takes no
            more moves then).
    """

    id: str
    room_id: str
    epoch: str
    doc: Doc
    times: list[float]
    _undo: UndoManager = field(repr=False)
    restored: bool = False

    @property
    def step(self) -> int:
        """The step the copy is at: 0 for the oldest, ``len(times) - 1`` for the newest."""
        return max(len(self._undo.undo_stack) - 1, 0)

    def move(self, steps: int) -> int:
        """Go back (``steps`` < 0) or forward through the history, never before the
        first step nor past the newest.

        Args:
            steps: How many steps, and which way.

        Returns:
            How many steps it went, with the same sign.
        """
        done = 0
        while steps < 0 and done > steps and len(self._undo.undo_stack) > 1:
            self._undo.undo()
            done -= 1
        while done < steps and self._undo.can_redo():
            self._undo.redo()
            done += 1
        return done


def build_fork(
    fork_id: str,
    room_id: str,
    epoch: str,
    kind: DocumentKind,
    history: LogContents,
    *,
    default_time: float | None = None,
) -> Fork:
    """Replay a room's history, step by step, into a new document.

    Args:
        fork_id: The new fork's id.
        room_id: The room's id.
        epoch: The room's epoch.
        kind: The kind of the room's document; it names the roots that hold content.
        history: The room's log, as loaded.
        default_time: The time of updates the log did not stamp (a log written by an
            earlier version), if it has no stamp at all; now by default.

    Returns:
        The fork, at the newest step.

    Raises:
        ValueError: The kind of document has no roots of content to step through.
    """
    if kind.content_roots is None:
        raise ValueError(f"a {kind.name} document has no timeline")
    doc: Doc = Doc()
    roots = [doc.get(name, type=root_type) for name, root_type in kind.content_roots.items()]
    # Each replayed step is one item of the undo stack: none are merged by time.
    undo = UndoManager(scopes=roots, capture_timeout_millis=0)
    undo.include_origin(_HISTORY)
    # Where each stamp starts its updates; updates before the first stamp take its time.
    starts = dict(history.times)
    first_time = history.times[0][1] if history.times else default_time or time.time()
    starts.setdefault(0, first_time)
    bounds = sorted(index for index in starts if index < len(history.updates))
    times: list[float] = []
    for begin, end in zip(bounds, [*bounds[1:], len(history.updates)], strict=True):
        updates = history.updates[begin:end]
        if not updates:
            continue
        before = len(undo.undo_stack)
        with doc.transaction(origin=_HISTORY):
            doc.apply_update(updates[0] if len(updates) == 1 else merge_updates(*updates))
        if len(undo.undo_stack) > before:
            times.append(starts[begin])
    return Fork(fork_id, room_id, epoch, doc, times, undo)
