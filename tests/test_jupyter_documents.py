"""Document kinds: diffs that turn one content into another by editing only what differs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jupyter_server.services.contents.filemanager import FileContentsManager
from pycrdt import Array, Doc, Map, Text

from jupyter_rooms.jupyter import documents
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


def _stored(tmp_path: Path, notebook: dict[str, Any] | bytes) -> bytes:
    data = notebook if isinstance(notebook, bytes) else json.dumps(notebook).encode()
    (tmp_path / "nb.ipynb").write_bytes(data)
    return data


def _written_by_nbformat() -> dict[str, Any]:
    nb = nbformat.v4.new_notebook(metadata={"language_info": {"name": "python"}})
    nb.cells = [
        nbformat.v4.new_code_cell(
            "a = 1\nprint(a)\n",
            outputs=[
                nbformat.v4.new_output("stream", name="stdout", text="1\n2\n"),
                nbformat.v4.new_output(
                    "display_data",
                    data={
                        "text/plain": "line\nline\n",
                        "application/json": {"a": ["x\n", "y"]},
                        "image/png": "AAAA",
                    },
                ),
                nbformat.v4.new_output("error", ename="E", evalue="v", traceback=["t\n", "u"]),
            ],
            execution_count=3,
        ),
        nbformat.v4.new_markdown_cell("# title\ntext", attachments={"a.png": {"text/x": "b\n"}}),
        nbformat.v4.new_raw_cell("raw\n", metadata={"tags": ["t"]}),
    ]
    written: dict[str, Any] = json.loads(nbformat.writes(nb))
    # What a manager adds when it writes, or marks when it reads: not content.
    written["metadata"]["signature"] = "sha256:0"
    written["cells"][2]["metadata"]["trusted"] = True
    return written


@pytest.mark.parametrize(
    "change",
    [
        lambda nb: nb,
        # An older minor version: no cell ids.
        lambda nb: {
            **nb,
            "nbformat_minor": 4,
            "cells": [{k: v for k, v in cell.items() if k != "id"} for cell in nb["cells"]],
        },
        lambda nb: {**nb, "cells": []},
        lambda nb: {k: v for k, v in nb.items() if k != "nbformat_minor"},
    ],
)
def test_a_notebook_file_reads_as_the_contents_manager_gives_it(
    tmp_path: Path, change: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    data = _stored(tmp_path, change(_written_by_nbformat()))
    manager = FileContentsManager(root_dir=str(tmp_path))
    model = manager.get("nb.ipynb", content=True, type="notebook")
    kind = NotebookKind()
    assert kind.from_file(data) == kind.from_model(model)


@pytest.mark.parametrize(
    "data",
    [
        b"{ not json",
        "\ufeff{}".encode(),
        json.dumps(_written_by_nbformat()).encode("utf-16"),
        b"[]",
        b'{"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": []}',
        b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}}',
        b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"id": "a"}]}',
        # Cells the manager would give ids of their own: none, or the same twice.
        b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, '
        b'"cells": [{"cell_type": "raw", "source": "", "metadata": {}}]}',
        b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": ['
        b'{"id": "a", "cell_type": "raw", "source": "", "metadata": {}},'
        b'{"id": "a", "cell_type": "raw", "source": "", "metadata": {}}]}',
        b'{"nbformat": 4, "nbformat_minor": 4, "metadata": {}, '
        b'"cells": [{"cell_type": "raw", "source": ["a", 1], "metadata": {}}]}',
    ],
)
def test_anything_but_a_plain_notebook_is_left_to_the_contents_manager(data: bytes) -> None:
    assert NotebookKind().from_file(data) is None


def _shape(value: Any) -> Any:
    """A document's values with the shared type each is held in."""
    if isinstance(value, Map):
        return ("Map", {key: _shape(item) for key, item in value.items()})
    if isinstance(value, Array):
        return ("Array", [_shape(item) for item in value])
    if isinstance(value, Text):
        return ("Text", str(value))
    return value


def test_cells_built_natively_are_those_of_the_public_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Opening a notebook fills pycrdt's native types directly; the document must be
    # the one pycrdt's public API builds (as jupyter_ydoc's YNotebook holds cells).
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Title\nsome *text*", attachments={}),
        nbformat.v4.new_raw_cell("", metadata={"format": "text/plain"}),
        nbformat.v4.new_code_cell(
            "print('a')\n1 / 0",
            execution_count=3,
            metadata={"tags": ["x"], "collapsed": False, "nested": {"a": [1, {"b": None}]}},
            outputs=[
                nbformat.v4.new_output("stream", name="stdout", text="a\nb\n"),
                nbformat.v4.new_output("stream", name="stderr", text=""),
                nbformat.v4.new_output(
                    "display_data", data={"text/plain": "x", "image/png": "aGk="}, metadata={}
                ),
                nbformat.v4.new_output(
                    "execute_result", data={"text/plain": "1"}, execution_count=3
                ),
                nbformat.v4.new_output("error", ename="E", evalue="v", traceback=["t"]),
            ],
        ),
        nbformat.v4.new_code_cell(""),
    ]
    del notebook.cells[3]["execution_count"]
    del notebook.cells[3]["outputs"]
    content = json.loads(json.dumps(notebook))
    empty = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}

    native: Doc = Doc()
    NotebookKind().update(native, empty, content)
    monkeypatch.setattr(documents, "_raw_transaction", lambda doc, ycells: None)
    public: Doc = Doc()
    NotebookKind().update(public, empty, content)

    built = _shape(native.get("cells", type=Array))
    assert built == _shape(public.get("cells", type=Array))
    assert len(built[1]) == 4
    # And reading it back gives the notebook.
    assert NotebookKind().content(native)["cells"][2] == content["cells"][2]


def test_a_notebook_filled_a_few_cells_at_a_time_is_the_one_update_builds() -> None:
    notebook = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    )
    notebook.cells = [
        nbformat.v4.new_code_cell(f"x = {i}", outputs=[])
        if i % 3
        else nbformat.v4.new_markdown_cell(f"# part {i}")
        for i in range(23)
    ]
    content = json.loads(json.dumps(notebook))
    empty = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    built: Doc = Doc()
    NotebookKind().update(built, empty, content)

    filled: Doc = Doc()
    updates: list[bytes] = []
    filled.observe(lambda event: updates.append(event.update))
    steps = 0
    with filled.transaction():
        for _ in NotebookKind().fill(filled, content, cells_at_once=5):
            steps += 1
    assert steps == 5
    # One transaction: one update, the whole notebook.
    assert len(updates) == 1
    assert NotebookKind().content(filled) == NotebookKind().content(built)
    assert NotebookKind().content(filled)["cells"] == content["cells"]
    assert _shape(filled.get("cells", type=Array)) == _shape(built.get("cells", type=Array))


def test_a_notebook_is_checked_again_only_where_it_changed() -> None:
    kind = NotebookKind()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(f"x = {i}") for i in range(3)]
    valid = json.loads(json.dumps(notebook))
    kind.validate(valid)

    changed = json.loads(json.dumps(valid))
    changed["cells"][1]["source"] = "y = 1"
    kind.validate(changed, valid)
    # A changed cell that breaks the schema is found, whichever cells passed before.
    changed["cells"][2]["outputs"] = [{"output_type": "nonsense"}]
    with pytest.raises(DocumentError, match="not a valid notebook"):
        kind.validate(changed, valid)
    # So is a new cell, and a broken top level.
    added = json.loads(json.dumps(valid))
    added["cells"].append({"cell_type": "code", "id": "new", "source": "", "metadata": {}})
    with pytest.raises(DocumentError, match="not a valid notebook"):
        kind.validate(added, valid)
    top = json.loads(json.dumps(valid))
    top["metadata"] = []
    with pytest.raises(DocumentError, match="not a valid notebook"):
        kind.validate(top, valid)


def test_preparing_a_notebook_for_a_save_touches_it_only_where_it_lacks() -> None:
    kind = NotebookKind()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("y")]
    content = json.loads(json.dumps(notebook))
    doc: Doc = Doc()
    kind.update(doc, kind.content(doc), content)
    state = doc.get_state()
    kind.prepare(doc, kind.content(doc))
    assert doc.get_state() == state
    # A cell a client gave no id (and a copy of another's): ids of their own.
    with doc.transaction():
        cells = doc.get("cells", type=Array)
        cells.append(Map({"cell_type": "markdown", "source": Text("z"), "metadata": Map()}))
        cells.append(Map({"cell_type": "raw", "id": cells[0]["id"], "source": Text("w")}))
    kind.prepare(doc, kind.content(doc))
    ids = [cell["id"] for cell in kind.content(doc)["cells"]]
    assert len(set(ids)) == 4 and all(ids)
    kind.validate(kind.content(doc))
