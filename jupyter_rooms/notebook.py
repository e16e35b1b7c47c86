"""Notebook rooms from code: cells, sources and outputs, without the shared schema.

A notebook room holds the document JupyterLab edits (``jupyter_ydoc``'s YNotebook: a
``cells`` array of maps, a ``meta`` map). :class:`Notebook` reads and edits it the way a
person would: editing a cell's source changes only the characters that differ, so
whoever is typing in that cell keeps their cursor and their own edits.

    async with connect("jupyter", id="analysis.ipynb") as client:
        nb = Notebook(client.doc)
        cell = nb.append_cell("print('hello')")
        cell.source = "print('hello, world')"   # inserts ", world", nothing else
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

from jupyter_ydoc import YNotebook
from pycrdt import Array, Doc, Map, Text

__all__ = ["Cell", "Notebook"]

_CELL_TYPES = ("code", "markdown", "raw")


def _utf8_offset(text: str, index: int) -> int:
    # pycrdt addresses a Text by UTF-8 byte offsets.
    return len(text[:index].encode())


def _edit_text(ytext: Text, old: str, new: str) -> None:
    """Turn ``old`` (the Text's content) into ``new`` by the smallest range edits."""
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    opcodes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    # From the end, so that earlier offsets stay valid.
    for tag, i1, i2, j1, j2 in reversed(opcodes):
        start = _utf8_offset(old, i1)
        if tag in ("replace", "delete"):
            del ytext[start : _utf8_offset(old, i2)]
        if tag in ("replace", "insert"):
            ytext.insert(start, new[j1:j2])


class Cell:
    """One cell of a notebook room. Reads are live: they show the document as it is now.

    A ``Cell`` stays tied to its cell while the cell exists; moving a cell replaces it
    by a copy (as JupyterLab does), so take the new ``Cell`` that ``move_cell`` returns.
    """

    def __init__(self, notebook: Notebook, ycell: Map) -> None:
        self._notebook = notebook
        self._ycell = ycell

    @property
    def id(self) -> str:
        """The cell's id (stable across edits, saved in the .ipynb)."""
        return str(self._ycell.get("id", ""))

    @property
    def cell_type(self) -> str:
        """``"code"``, ``"markdown"`` or ``"raw"``."""
        return str(self._ycell.get("cell_type", ""))

    @property
    def source(self) -> str:
        """The cell's source. Setting it edits only the characters that differ."""
        source = self._ycell.get("source")
        return str(source) if source is not None else ""

    @source.setter
    def source(self, value: str) -> None:
        self.set_source(value)

    def set_source(self, value: str) -> None:
        """Change the source to ``value`` by editing only the ranges that differ.

        Args:
            value: The new source.
        """
        ytext = self._ytext()
        with self._notebook.doc.transaction():
            _edit_text(ytext, str(ytext), value)

    def edit(self, start: int, end: int, text: str = "") -> None:
        """Replace the characters ``start:end`` of the source with ``text``.

        Args:
            start: The first character to replace (a Python string index).
            end: The character after the last one to replace.
            text: What to put there.
        """
        ytext = self._ytext()
        current = str(ytext)
        if not 0 <= start <= end <= len(current):
            raise IndexError(f"range {start}:{end} is outside the source ({len(current)} chars)")
        with self._notebook.doc.transaction():
            offset = _utf8_offset(current, start)
            if end > start:
                del ytext[offset : _utf8_offset(current, end)]
            if text:
                ytext.insert(offset, text)

    def _ytext(self) -> Text:
        source = self._ycell.get("source")
        if not isinstance(source, Text):
            raise TypeError(f"cell {self.id!r} has no shared source text")
        return source

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """The cell's outputs, as nbformat dictionaries (empty for non-code cells)."""
        outputs = self._ycell.get("outputs")
        if not isinstance(outputs, Array):
            return []
        return [_plain(output) for output in outputs]

    @property
    def text_output(self) -> str:
        """The cell's output as text: streams, then ``text/plain`` results and errors."""
        parts = []
        for output in self.outputs:
            kind = output.get("output_type")
            if kind == "stream":
                text = output.get("text", "")
                parts.append("".join(text) if isinstance(text, list) else str(text))
            elif kind in ("execute_result", "display_data"):
                plain = output.get("data", {}).get("text/plain", "")
                parts.append(("".join(plain) if isinstance(plain, list) else str(plain)) + "\n")
            elif kind == "error":
                parts.append(f"{output.get('ename', '')}: {output.get('evalue', '')}\n")
        return "".join(parts)

    @property
    def execution_count(self) -> int | None:
        """The cell's execution count, if it is a code cell that ran."""
        count = self._ycell.get("execution_count")
        return int(count) if isinstance(count, (int, float)) else None

    @property
    def metadata(self) -> dict[str, Any]:
        """The cell's metadata."""
        metadata = self._ycell.get("metadata")
        return _plain(metadata) if metadata is not None else {}

    def to_dict(self) -> dict[str, Any]:
        """The cell as an nbformat dictionary."""
        cell = _plain(self._ycell)
        cell.pop("execution_state", None)
        return cell

    def __repr__(self) -> str:
        first = self.source.split("\n", 1)[0]
        return f"<Cell {self.cell_type} {self.id!r}: {first[:40]!r}>"


def _plain(value: Any) -> Any:
    if isinstance(value, (Map, Array, Text)):
        return value.to_py()
    return value


class Notebook:
    """The cells of a notebook room's document.

    Args:
        doc: The document of a notebook room (for example ``client.doc``).
    """

    def __init__(self, doc: Doc) -> None:
        self.doc = doc
        self._ynotebook = YNotebook(doc)

    @property
    def _ycells(self) -> Array:
        cells: Array = self._ynotebook.ycells
        return cells

    def __len__(self) -> int:
        return len(self._ycells)

    def __iter__(self) -> Iterator[Cell]:
        return iter(self.cells)

    @property
    def cells(self) -> list[Cell]:
        """The cells, in order."""
        return [Cell(self, ycell) for ycell in self._ycells]

    def __getitem__(self, key: int | str) -> Cell:
        """A cell by position, or by id."""
        return Cell(self, self._ycells[self.index(key)])

    def index(self, key: int | str) -> int:
        """The position of a cell given by position (negative counts from the end) or id.

        Args:
            key: A position or a cell id.

        Returns:
            The cell's position.
        """
        if isinstance(key, str):
            for i, ycell in enumerate(self._ycells):
                if ycell.get("id") == key:
                    return i
            raise KeyError(f"no cell with id {key!r}")
        count = len(self._ycells)
        index = key + count if key < 0 else key
        if not 0 <= index < count:
            raise IndexError(f"cell {key} is out of range: the notebook has {count} cells")
        return index

    def insert_cell(
        self,
        index: int,
        source: str = "",
        *,
        cell_type: str = "code",
        metadata: dict[str, Any] | None = None,
    ) -> Cell:
        """Insert a new cell.

        Args:
            index: Where: ``0`` is first, ``len(notebook)`` is last.
            source: The cell's source.
            cell_type: ``"code"``, ``"markdown"`` or ``"raw"``.
            metadata: The cell's metadata.

        Returns:
            The new cell.
        """
        if cell_type not in _CELL_TYPES:
            raise ValueError(
                f"cell_type must be one of {', '.join(_CELL_TYPES)}, not {cell_type!r}"
            )
        if not 0 <= index <= len(self._ycells):
            raise IndexError(f"cannot insert at {index}: the notebook has {len(self)} cells")
        cell: dict[str, Any] = {
            "id": uuid4().hex[:16],
            "cell_type": cell_type,
            "source": source,
            "metadata": metadata or {},
        }
        if cell_type == "code":
            cell.update(outputs=[], execution_count=None)
        ycell = self._ynotebook.create_ycell(cell)
        self._ycells.insert(index, ycell)
        return Cell(self, self._ycells[index])

    def append_cell(self, source: str = "", *, cell_type: str = "code") -> Cell:
        """Add a cell at the end.

        Args:
            source: The cell's source.
            cell_type: ``"code"``, ``"markdown"`` or ``"raw"``.

        Returns:
            The new cell.
        """
        return self.insert_cell(len(self._ycells), source, cell_type=cell_type)

    def delete_cell(self, key: int | str) -> None:
        """Delete a cell, given by position or id.

        Args:
            key: The cell's position or id.
        """
        del self._ycells[self.index(key)]

    def move_cell(self, key: int | str, to: int) -> Cell:
        """Move a cell to another position.

        Args:
            key: The cell's position or id.
            to: Its position after the move.

        Returns:
            The moved cell (a copy with the same id, source and outputs).
        """
        index = self.index(key)
        if not 0 <= to < len(self._ycells):
            raise IndexError(f"cannot move to {to}: the notebook has {len(self)} cells")
        with self.doc.transaction():
            cell = Cell(self, self._ycells[index]).to_dict()
            del self._ycells[index]
            self._ycells.insert(to, self._ynotebook.create_ycell(cell))
        return Cell(self, self._ycells[to])

    @property
    def metadata(self) -> dict[str, Any]:
        """The notebook's metadata."""
        metadata: dict[str, Any] = self._ynotebook.get()["metadata"]
        return metadata

    def to_dict(self) -> dict[str, Any]:
        """The whole notebook as an nbformat dictionary."""
        notebook: dict[str, Any] = self._ynotebook.get()
        # A document that never held a notebook file has no format version yet.
        if not notebook.get("nbformat"):
            notebook["nbformat"], notebook["nbformat_minor"] = 4, 5
        return notebook
