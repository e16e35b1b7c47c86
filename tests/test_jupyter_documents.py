"""Document kinds: diffs that turn one content into another by editing only what differs."""

from __future__ import annotations

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from jupyter_rooms.jupyter.documents import (
    DocumentError,
    NotebookKind,
    TextKind,
    apply_text_diff,
    kind_for_path,
)

texts = st.text(alphabet=st.sampled_from("ab\n é😀"), max_size=40)


@settings(max_examples=200, deadline=None)
@given(old=texts, new=texts)
def test_a_text_diff_turns_old_into_new(old: str, new: str) -> None:
    doc: Doc = Doc()
    text = doc.get("source", type=Text)
    text += old
    with doc.transaction():
        apply_text_diff(text, old, new)
    assert str(text) == new


@settings(max_examples=100, deadline=None)
@given(base=texts, theirs=texts, mine=st.text(alphabet="XYZ", min_size=1, max_size=5))
def test_a_diff_merged_into_a_document_keeps_concurrent_edits(
    base: str, theirs: str, mine: str
) -> None:
    # What the three-way merge of a file does: the file's diff is made on the document
    # as of the last save, and merged with an edit made since.
    saved: Doc = Doc()
    saved.get("source", type=Text).insert(0, base)
    room: Doc = Doc()
    room.apply_update(saved.get_update())
    room.get("source", type=Text).insert(0, mine)
    state = saved.get_state()
    apply_text_diff(saved.get("source", type=Text), base, theirs)
    room.apply_update(saved.get_update(state))
    merged = str(room.get("source", type=Text))
    # Both edits, each whole (concurrent inserts at one place may come in either order).
    assert mine in merged
    assert merged.replace(mine, "", 1) == theirs


def test_kinds_follow_the_path_and_the_content() -> None:
    assert kind_for_path("a/b.ipynb").name == "notebook"
    assert kind_for_path("state.yroom").name == "room"
    assert kind_for_path("notes.md").name == "text"
    assert kind_for_path("Makefile").name == "text"
    assert kind_for_path("image.png").name == "blob"
    assert kind_for_path("data.bin", "text").name == "text"
    assert kind_for_path("notes.txt", "base64").name == "blob"


def test_a_notebook_round_trips_and_is_valid() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# title"),
        nbformat.v4.new_code_cell("print(1)"),
    ]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells[1].execution_count = 1
    kind = NotebookKind()
    content = kind.from_model({"content": nb})
    doc: Doc = Doc()
    kind.update(doc, kind.content(doc), content)
    assert kind.content(doc) == content
    kind.validate(kind.content(doc))


def test_an_invalid_notebook_is_refused_with_a_reason() -> None:
    kind = NotebookKind()
    with pytest.raises(DocumentError, match="not a valid notebook"):
        kind.validate(
            {
                "cells": [{"cell_type": "nonsense"}],
                "metadata": {},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    with pytest.raises(DocumentError):
        TextKind().from_model({"format": "base64", "content": "AAE="})
