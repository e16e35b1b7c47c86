"""Editing notebook rooms from code through cells."""

from __future__ import annotations

import anyio
import nbformat
import pytest
from pycrdt import Doc

from jupyter_rooms import bind, connect
from jupyter_rooms.notebook import Notebook


def test_cells_can_be_added_read_moved_and_deleted() -> None:
    nb = Notebook(Doc())
    first = nb.append_cell("x = 1")
    nb.append_cell("# Title", cell_type="markdown")
    nb.insert_cell(0, "import os")
    assert [c.source for c in nb] == ["import os", "x = 1", "# Title"]
    assert [c.cell_type for c in nb] == ["code", "code", "markdown"]
    assert nb[first.id].source == "x = 1"

    first_id = first.id
    moved = nb.move_cell(first_id, 2)
    assert moved.id == first_id
    assert [c.source for c in nb] == ["import os", "# Title", "x = 1"]

    nb.delete_cell(0)
    assert [c.source for c in nb] == ["# Title", "x = 1"]
    notebook = nbformat.from_dict(nb.to_dict())
    nbformat.validate(notebook)


def test_bad_positions_and_types_are_clear_errors() -> None:
    nb = Notebook(Doc())
    nb.append_cell("a")
    with pytest.raises(IndexError, match="has 1 cells"):
        nb[3]
    with pytest.raises(KeyError, match="no cell with id"):
        nb["nope"]
    with pytest.raises(ValueError, match="cell_type must be one of"):
        nb.append_cell("a", cell_type="python")
    with pytest.raises(IndexError, match="outside the source"):
        nb[0].edit(0, 5, "x")
    assert [c.source for c in nb] == ["a"]


def test_set_source_edits_only_what_differs() -> None:
    doc = Doc()
    nb = Notebook(doc)
    cell = nb.append_cell("print('hello')\n# ünïcode 😀 stays\n")
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    cell.source = "print('hello, world')\n# ünïcode 😀 stays\n"
    assert cell.source == "print('hello, world')\n# ünïcode 😀 stays\n"
    # One small update: the inserted characters, not the whole source again.
    assert len(updates) == 1
    assert len(updates[0]) < 40

    cell.edit(0, 5, "echo")
    assert cell.source.startswith("echo('hello, world')")


def test_outputs_are_readable() -> None:
    doc = Doc()
    from jupyter_ydoc import YNotebook

    YNotebook(doc).set(
        {
            "cells": [
                {
                    "cell_type": "code",
                    "id": "c1",
                    "source": "print(1); 2",
                    "metadata": {},
                    "execution_count": 3,
                    "outputs": [
                        {"output_type": "stream", "name": "stdout", "text": "1\n"},
                        {
                            "output_type": "execute_result",
                            "execution_count": 3,
                            "data": {"text/plain": "2"},
                            "metadata": {},
                        },
                    ],
                }
            ],
            "metadata": {},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )
    cell = Notebook(doc)["c1"]
    assert cell.execution_count == 3
    assert cell.text_output == "1\n2\n"
    assert [o["output_type"] for o in cell.outputs] == ["stream", "execute_result"]


@pytest.mark.anyio
async def test_concurrent_edits_of_one_cell_merge() -> None:
    async with bind("memory") as server:
        async with (
            connect("memory", id="nb", server=server) as alice,
            connect("memory", id="nb", server=server) as bob,
        ):
            Notebook(alice.doc).append_cell("total = a + b")
            bob_nb = Notebook(bob.doc)
            with anyio.fail_after(5):
                while len(bob_nb) < 1:
                    await anyio.sleep(0.01)
            # Both change the same source at once: neither edit replaces the other.
            Notebook(alice.doc)[0].source = "total = a + b + c"
            bob_nb[0].source = "grand_total = a + b"
            with anyio.fail_after(5):
                while Notebook(alice.doc)[0].source != bob_nb[0].source:
                    await anyio.sleep(0.01)
            assert bob_nb[0].source == "grand_total = a + b + c"
