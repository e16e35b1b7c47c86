"""Timelines built from update logs: steps by time stamp, bounds, what makes no step."""

from __future__ import annotations

import pytest
from pycrdt import Doc, Map, Text

from jupyter_rooms.jupyter.documents import kind_named
from jupyter_rooms.jupyter.timeline import build_fork
from jupyter_rooms.updatelog import LogContents


def history_of(*changes: tuple[float | None, str, str]) -> LogContents:
    """A text room's log: each change sets the source or the page's state, stamped with
    its time when it has one."""
    doc: Doc = Doc()
    source, state = doc.get("source", type=Text), doc.get("state", type=Map)
    contents = LogContents()
    doc.observe(lambda event: contents.updates.append(event.update))
    for when, root, value in changes:
        if when is not None:
            contents.times.append((len(contents.updates), when))
        with doc.transaction():
            if root == "source":
                source.clear()
                source += value
            else:
                state["dirty"] = value
    return contents


def test_steps_follow_the_stamps_and_skip_what_is_not_content() -> None:
    history = history_of(
        (10.0, "source", "a"),
        (11.0, "state", "x"),  # the page's bookkeeping: no step of its own
        (12.0, "source", "ab"),
        (None, "source", "abc"),  # the same second as the change before
        (13.0, "source", "abcd"),
    )
    fork = build_fork("f", "a.txt", "epoch", kind_named("text"), history)
    source = fork.doc.get("source", type=Text)
    assert fork.times == [10.0, 12.0, 13.0]
    assert (str(source), fork.step) == ("abcd", 2)
    assert fork.move(-1) == -1 and str(source) == "abc"
    assert fork.move(-9) == -1 and str(source) == "a"
    assert fork.move(9) == 2 and str(source) == "abcd"
    assert fork.move(1) == 0


def test_a_log_without_stamps_is_one_step() -> None:
    history = history_of((None, "source", "a"), (None, "source", "ab"))
    fork = build_fork("f", "a.txt", "epoch", kind_named("text"), history, default_time=5.0)
    assert fork.times == [5.0]
    assert fork.move(-1) == 0
    assert str(fork.doc.get("source", type=Text)) == "ab"


def test_a_document_with_no_content_roots_has_no_timeline() -> None:
    with pytest.raises(ValueError, match="no timeline"):
        build_fork("f", "a.jrroom", "epoch", kind_named("room"), history_of())
