"""Document kinds: how a room's document maps to the file it is bound to.

Each kind reads a file's content from a contents model, writes it back as one, reads
the content a document holds, and changes a document so that it holds new content by
editing only what differs (so that concurrent edits and cursors elsewhere survive):

- ``notebook`` (``.ipynb``): the schema of ``jupyter_ydoc``'s YNotebook (``cells``, ``meta``);
  cells are matched by id, a cell's source is edited by character ranges.
- ``text``: a YUnicode (a ``source`` Text), edited by character ranges.
- ``blob``: a YBlob (the file's bytes in the ``source`` Map).
- ``room`` (``.yroom``): free-form shared state (any Maps, Arrays, Texts); the file is an
  update log, so its content merges into the room as a CRDT update.
"""

from __future__ import annotations

import base64
import copy
import difflib
import json
import mimetypes
import os
import posixpath
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any
from uuid import uuid4

import nbformat
from nbformat.validator import get_validator
from pycrdt import Array, Doc, Map, MapEvent, Text, merge_updates

from .._collector import collector_paused
from ..protocol import ProtocolError, validate_update
from ..updatelog import LogFormatError, UpdateLog

__all__ = [
    "FREEFORM_SUFFIX",
    "BlobKind",
    "DocumentError",
    "DocumentKind",
    "FreeformKind",
    "NotebookKind",
    "TextKind",
    "apply_text_diff",
    "kind_for_path",
    "kind_named",
]

# The extension of free-form rooms' files.
FREEFORM_SUFFIX = ".yroom"

# Files whose type ``mimetypes`` does not call text/* but which are text.
_TEXT_SUFFIXES = {
    ".json",
    ".js",
    ".ts",
    ".jsx",
    ".tsx",
    ".yaml",
    ".yml",
    ".toml",
    ".cfg",
    ".ini",
    ".xml",
    ".svg",
    ".sh",
    ".bash",
    ".r",
    ".jl",
    ".sql",
    ".tex",
    ".rst",
    ".md",
    ".ipynb_checkpoints",
}

# Above this size a block of changed lines is replaced whole rather than diffed by
# characters (which costs the product of the two lengths).
_CHAR_DIFF_LIMIT = 20_000


class DocumentError(ValueError):
    """Content that a document kind cannot read or write."""


class DocumentKind(ABC):
    """How one type of file maps to a document.

    Attributes:
        name: The kind's name, recorded in the room's log.
        model_type: The contents model ``type`` used to read and write the file.
        model_format: The contents model ``format`` (``None`` for notebooks).
        heavy: Whether reading and checking a large document's content takes long
            enough to be done in a worker thread (on a copy of the document).
        content_roots: The document's root types that hold the file's content, by name
            (``None``: all of the document is content). Changes elsewhere (JupyterLab's
            ``state`` map) are kept, but are nothing to save.
    """

    name: str
    model_type: str
    model_format: str | None
    heavy = False
    content_roots: dict[str, type[Array] | type[Map] | type[Text]] | None = None

    def bookkeeping(self, events: list[Any]) -> bool:
        """Whether changes to a content root (as ``observe_deep`` reports them) leave
        the content as it was (``False`` by default).

        Args:
            events: The events of one transaction under one root.

        Returns:
            Whether the file would not change.
        """
        return False

    @abstractmethod
    def content(self, doc: Doc) -> Any:
        """Read the content a document holds.

        Args:
            doc: The document.

        Returns:
            The content, as the file would hold it.
        """

    def fill(self, doc: Doc, content: Any) -> Iterator[None]:
        """Fill an empty document with ``content``, in its current transaction. A
        generator: a kind whose content can be large yields between parts of it, so that
        a caller on an event loop lets other work run meanwhile (the document is the one
        ``update`` makes); this one fills it in one go.

        Args:
            doc: An empty document, in a transaction.
            content: The content, as ``from_model`` reads it.
        """
        self.update(doc, self.content(doc), content)
        yield from ()

    @abstractmethod
    def update(self, doc: Doc, old: Any, new: Any) -> None:
        """Change a document that holds ``old`` so that it holds ``new``, editing only
        what differs.

        Args:
            doc: The document.
            old: What it holds now (as returned by ``content``).
            new: What it should hold.
        """

    @abstractmethod
    def from_model(self, model: dict[str, Any]) -> Any:
        """Read the content of a contents model.

        Args:
            model: A model from the contents manager, with its content.

        Returns:
            The content.

        Raises:
            DocumentError: The model does not hold content of this kind.
        """

    @abstractmethod
    def to_model(self, content: Any) -> dict[str, Any]:
        """Make a contents model to save.

        Args:
            content: The content.

        Returns:
            The model (``type``, ``format``, ``content``).
        """

    def same(self, a: Any, b: Any) -> bool:
        """Whether two contents are the same for this kind.

        Args:
            a: One content.
            b: The other.

        Returns:
            Whether saving one over the other would change nothing.
        """
        return bool(a == b)

    def difference(self, a: Any, b: Any) -> int:
        """How much two contents differ, roughly: 0 when they are the same, more the
        more there is in one and not in the other (for choosing the closer of two).

        Args:
            a: One content.
            b: The other.

        Returns:
            The size of what differs, in the kind's own units.
        """
        if self.same(a, b):
            return 0
        units_a, units_b = Counter(self._units(a)), Counter(self._units(b))
        return sum(((units_a - units_b) + (units_b - units_a)).values())

    def change(self, old: Any, new: Any) -> tuple[int, int]:
        """How much a change from ``old`` to ``new`` deletes and how much it adds,
        roughly (for telling which of several contents another one was made from).

        Args:
            old: The content before.
            new: The content after.

        Returns:
            What is deleted and what is added, in the kind's own units.
        """
        units_old, units_new = Counter(self._units(old)), Counter(self._units(new))
        return sum((units_old - units_new).values()), sum((units_new - units_old).values())

    def _units(self, content: Any) -> Iterable[Any]:
        # By default a content is one unit: two contents are the same or not.
        return [repr(content)]

    def cut_short(self, content: Any, full: Any) -> bool:
        """Whether ``content`` is what an interrupted write of ``full`` leaves in a file
        (contents managers write files in place): a strict beginning of it.

        Args:
            content: What the file holds.
            full: What was being written.

        Returns:
            Whether ``content`` is ``full`` cut short.
        """
        if isinstance(content, str) and isinstance(full, str):
            return len(content) < len(full) and full.startswith(content)
        if isinstance(content, bytes) and isinstance(full, bytes):
            return len(content) < len(full) and full.startswith(content)
        return False

    def file_bytes(self, content: Any) -> bytes | None:
        """The bytes a contents manager writes for ``content``, when a file of this kind
        cannot be read back once cut short (``None``: it can, compare contents instead).

        Args:
            content: The content being saved.

        Returns:
            The bytes, or ``None``.
        """
        return None

    def prepare(self, doc: Doc, content: Any = None) -> None:  # noqa: B027 (most kinds need nothing)
        """Fill in what a document lacks to be saved as a valid file (a no-op by default).

        Args:
            doc: The document.
            content: Its content as just read, if at hand: a kind may tell from it that
                nothing is lacking, and leave the document alone.
        """

    def validate(self, content: Any, valid: Any = None) -> None:  # noqa: B027 (most kinds accept anything)
        """Check that content can be saved (always, by default).

        Args:
            content: The content.
            valid: Content that passed before, if any: what ``content`` shares with it
                need not be checked again.

        Raises:
            DocumentError: It cannot.
        """


def _common_prefix_length(a: str, b: str, chunk: int = 65536) -> int:
    """How long the beginning ``a`` and ``b`` share is (compared a chunk at a time)."""
    end = min(len(a), len(b))
    start = 0
    while start < end and a[start : start + chunk] == b[start : start + chunk]:
        start += chunk
    if start >= end:
        return end
    # The first difference is in this chunk: halve it until it is found.
    low, high = start, min(start + chunk, end)
    while low < high:
        middle = (low + high + 1) // 2
        if a[start:middle] == b[start:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _line_starts(lines: list[str]) -> list[int]:
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    return starts


def _text_edits(old: str, new: str) -> list[tuple[int, int, str]]:
    """The edits that turn ``old`` into ``new``: ``(start, end, replacement)`` in
    character offsets of ``old``, in order and not overlapping.

    Lines are matched first and characters only within changed blocks of lines, which
    keeps large texts fast and the edits where a person would place them.
    """
    old_lines = old.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    old_starts = _line_starts(old_lines)
    new_starts = _line_starts(new_lines)
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=len(old_lines) > 5000)
    edits: list[tuple[int, int, str]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        start, end = old_starts[i1], old_starts[i2]
        replacement = new[new_starts[j1] : new_starts[j2]]
        before = old[start:end]
        if before and replacement and len(before) + len(replacement) <= _CHAR_DIFF_LIMIT:
            chars = difflib.SequenceMatcher(None, before, replacement, autojunk=False)
            for ctag, c1, c2, d1, d2 in chars.get_opcodes():
                if ctag != "equal":
                    edits.append((start + c1, start + c2, replacement[d1:d2]))
        else:
            edits.append((start, end, replacement))
    return edits


def apply_text_diff(text: Text, old: str, new: str) -> None:
    """Edit a Text that holds ``old`` so that it holds ``new``, by character ranges.

    Args:
        text: The shared text (it must hold ``old``).
        old: Its content now.
        new: The content it should have.
    """
    if old == new:
        return
    # pycrdt addresses a Text by UTF-8 byte offsets: convert, walking forward once.
    byte_edits: list[tuple[int, int, str]] = []
    char_pos = byte_pos = 0
    for start, end, replacement in _text_edits(old, new):
        byte_start = byte_pos + len(old[char_pos:start].encode())
        byte_end = byte_start + len(old[start:end].encode())
        byte_edits.append((byte_start, byte_end, replacement))
        char_pos, byte_pos = end, byte_end
    # From the end, so that earlier offsets stay valid.
    for byte_start, byte_end, replacement in reversed(byte_edits):
        if byte_end > byte_start:
            del text[byte_start:byte_end]
        if replacement:
            text.insert(byte_start, replacement)


def _update_map(ymap: Map, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Set and delete only the keys of a Map whose values differ."""
    for key in old.keys() - new.keys():
        if key in ymap:
            del ymap[key]
    for key, value in new.items():
        if key not in old or old[key] != value or key not in ymap:
            ymap[key] = copy.deepcopy(value)


class TextKind(DocumentKind):
    """A text file: a ``source`` Text (jupyter_ydoc's YUnicode)."""

    name = "text"
    content_roots = {"source": Text}
    model_type = "file"
    model_format = "text"

    def content(self, doc: Doc) -> str:
        return str(doc.get("source", type=Text))

    def update(self, doc: Doc, old: str, new: str) -> None:
        with doc.transaction():
            apply_text_diff(doc.get("source", type=Text), old, new)

    def from_model(self, model: dict[str, Any]) -> str:
        content = model.get("content")
        if model.get("format") != "text" or not isinstance(content, str):
            raise DocumentError("the file is not UTF-8 text")
        return content

    def _units(self, content: str) -> Iterable[Any]:
        return content

    def change(self, old: str, new: str) -> tuple[int, int]:
        # Taken as one edit: what lies between the beginning and the end they share.
        start = _common_prefix_length(old, new)
        end = _common_prefix_length(old[start:][::-1], new[start:][::-1])
        return len(old) - start - end, len(new) - start - end

    def to_model(self, content: str) -> dict[str, Any]:
        return {"type": "file", "format": "text", "content": content}


class BlobKind(DocumentKind):
    """Any other file: its bytes in the ``source`` Map (jupyter_ydoc's YBlob)."""

    name = "blob"
    content_roots = {"source": Map}
    model_type = "file"
    model_format = "base64"

    def content(self, doc: Doc) -> bytes:
        value = doc.get("source", type=Map).get("bytes", b"")
        return bytes(value) if isinstance(value, bytes | bytearray) else b""

    def update(self, doc: Doc, old: bytes, new: bytes) -> None:
        source = doc.get("source", type=Map)
        if old != new or "bytes" not in source:
            source["bytes"] = new

    def from_model(self, model: dict[str, Any]) -> bytes:
        content = model.get("content")
        if model.get("format") != "base64" or not isinstance(content, str):
            raise DocumentError("the contents manager did not return the file's bytes")
        try:
            return base64.b64decode(content.encode("ascii"), validate=False)
        except ValueError as exc:
            raise DocumentError(f"undecodable base64 content: {exc}") from None

    def to_model(self, content: bytes) -> dict[str, Any]:
        return {"type": "file", "format": "base64", "content": base64.b64encode(content).decode()}


def _complete(content: dict[str, Any]) -> bool:
    """Whether a notebook's content, as read from a document, has every cell key that
    ``NotebookKind.prepare`` would fill in (ids unique, where the format has them)."""
    needs_ids = (content.get("nbformat"), content.get("nbformat_minor")) >= (4, 5)
    seen: set[Any] = set()
    for cell in content.get("cells", []):
        if not isinstance(cell, dict) or "metadata" not in cell or "source" not in cell:
            return False
        if cell.get("cell_type") == "code" and (
            "outputs" not in cell or "execution_count" not in cell
        ):
            return False
        if needs_ids:
            cell_id = cell.get("id")
            if not isinstance(cell_id, str) or not cell_id or cell_id in seen:
                return False
            seen.add(cell_id)
    return True


def _plain_cell(ycell: Any, meta: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(ycell, Map):
        raise DocumentError("a notebook cell is not a map")
    cell = ycell.to_py() or {}
    cell.pop("execution_state", None)
    # Numbers that come from Yjs are floats.
    for holder in [cell, *(cell.get("outputs") or [])]:
        count = holder.get("execution_count") if isinstance(holder, dict) else None
        if isinstance(count, float) and count.is_integer():
            holder["execution_count"] = int(count)
    if cell.get("cell_type") in ("markdown", "raw") and cell.get("attachments") == {}:
        del cell["attachments"]
    return cell


def _youtput(output: dict[str, Any]) -> Map:
    # Shallow copies: pycrdt copies what it integrates and never changes the values it
    # is given, so only the keys replaced here need a dict of their own.
    if output.get("output_type") == "stream":
        text = output.get("text", "")
        output = {**output, "text": Text("".join(text) if isinstance(text, list) else text)}
    return Map(output)


def _new_ycell(cell: dict[str, Any]) -> Map:
    """A cell as jupyter_ydoc's YNotebook holds it: source a Text, metadata a Map,
    outputs an Array of Maps (stream texts as Texts)."""
    source = cell.get("source", "")
    ycell = {
        **cell,
        "source": Text("".join(source) if isinstance(source, list) else source),
        "metadata": Map(cell.get("metadata") or {}),
    }
    if cell.get("cell_type") == "code":
        ycell["outputs"] = Array([_youtput(output) for output in cell.get("outputs") or []])
        ycell.setdefault("execution_count", None)
    return Map(ycell)


def _raw_transaction(doc: Doc, ycells: Array) -> Any:
    """The native transaction under ``doc``'s current one, if pycrdt's native types
    offer what ``_insert_ycells`` needs; ``None`` otherwise (then cells are built
    through pycrdt's public API)."""
    txn = getattr(doc, "_txn", None)
    raw = getattr(txn, "_txn", None)
    integrated = getattr(ycells, "_integrated", None)
    if raw is None or not hasattr(integrated, "insert_map_prelim"):
        return None
    return raw


def _fill_youtput(raw: Any, youtput: Any, output: dict[str, Any]) -> None:
    stream = output.get("output_type") == "stream"
    for key, value in output.items():
        if key == "text" and stream:
            text = "".join(value) if isinstance(value, list) else value
            ytext = youtput.insert_text_prelim(raw, key)
            if text:
                ytext.insert(raw, 0, text)
        else:
            youtput.insert(raw, key, value)


def _fill_ycell(raw: Any, ycell: Any, cell: dict[str, Any]) -> None:
    code = cell.get("cell_type") == "code"
    for key, value in cell.items():
        if key == "source":
            continue
        if key == "metadata":
            ymetadata = ycell.insert_map_prelim(raw, key)
            for name, item in (value or {}).items():
                ymetadata.insert(raw, name, item)
        elif key == "outputs" and code:
            youtputs = ycell.insert_array_prelim(raw, key)
            for index, output in enumerate(value or []):
                _fill_youtput(raw, youtputs.insert_map_prelim(raw, index), output)
        else:
            ycell.insert(raw, key, value)
    source = cell.get("source")
    text = "".join(source) if isinstance(source, list) else source
    ytext = ycell.insert_text_prelim(raw, "source")
    if text:
        ytext.insert(raw, 0, text)
    if "metadata" not in cell:
        ycell.insert_map_prelim(raw, "metadata")
    if code:
        if "outputs" not in cell:
            ycell.insert_array_prelim(raw, "outputs")
        if "execution_count" not in cell:
            ycell.insert(raw, "execution_count", None)


def _insert_ycells(doc: Doc, ycells: Array, index: int, cells: list[dict[str, Any]]) -> None:
    """Insert cells at ``index``, each as ``_new_ycell`` makes it, in the current
    transaction of ``doc``.

    Opening a large notebook is mostly this: each cell is five or more shared types and
    a dozen values, which pycrdt's public API integrates one Python call layer at a time
    (about three quarters of a cold open of a 2,000-cell notebook). Filling pycrdt's
    native types directly in one transaction gives the same document about three times
    faster. Should pycrdt's internals ever differ, the public API is used.
    """
    raw = _raw_transaction(doc, ycells)
    if raw is None:
        for offset, cell in enumerate(cells):
            ycells.insert(index + offset, _new_ycell(cell))
        return
    native: Any = ycells._integrated
    for offset, cell in enumerate(cells):
        _fill_ycell(raw, native.insert_map_prelim(raw, index + offset), cell)


def _is_json_mime(mime: str) -> bool:
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


def _joined(value: list[Any]) -> str | None:
    """A text split in lines, joined; ``None`` if an item is not a string (``join``
    checks each, faster than a look at each beforehand)."""
    try:
        return "".join(value)
    except TypeError:
        return None


def _rejoin_bundle(bundle: Any) -> bool:
    """Join a mime bundle's texts split in lines (in place), as nbformat reads them."""
    if not isinstance(bundle, dict):
        return False
    for mime, value in bundle.items():
        if isinstance(value, list) and not _is_json_mime(mime):
            text = _joined(value)
            if text is not None:
                bundle[mime] = text
    return True


def _rejoin_cell(cell: dict[str, Any]) -> bool:
    """Put a cell read from a file in the form nbformat reads it in (in place): texts
    split in lines joined, no ``trusted`` mark; ``False`` if the cell is not of the
    shape nbformat reads without an error of its own."""
    metadata = cell.get("metadata")
    if not isinstance(metadata, dict):
        return False
    metadata.pop("trusted", None)
    source = cell.get("source")
    if isinstance(source, list):
        source = _joined(source)
        if source is None:
            return False
        cell["source"] = source
    attachments = cell.get("attachments", {})
    if not isinstance(attachments, dict) or not all(map(_rejoin_bundle, attachments.values())):
        return False
    if cell.get("cell_type") != "code":
        return True
    outputs = cell.get("outputs", [])
    if not isinstance(outputs, list):
        return False
    for output in outputs:
        if not isinstance(output, dict):
            return False
        output_type = output.get("output_type", "")
        if output_type in ("execute_result", "display_data"):
            if not _rejoin_bundle(output.get("data", {})):
                return False
        elif output_type and isinstance(output.get("text", ""), list):
            text = _joined(output["text"])
            if text is None:
                return False
            output["text"] = text
    return True


class NotebookKind(DocumentKind):
    """A notebook: jupyter_ydoc's YNotebook (``cells`` Array of Maps, ``meta`` Map)."""

    name = "notebook"
    model_type = "notebook"
    model_format = None
    heavy = True
    content_roots = {"cells": Array, "meta": Map}

    def bookkeeping(self, events: list[Any]) -> bool:
        # A cell's execution state (idle, busy), which kernels and pages set as cells
        # run, is not written to the file.
        for event in events:
            path = getattr(event, "path", None)
            keys = getattr(event, "keys", None)
            if not isinstance(event, MapEvent) or not isinstance(path, list) or len(path) != 1:
                return False
            if not isinstance(keys, dict) or not set(keys) <= {"execution_state"}:
                return False
        return True

    def content(self, doc: Doc) -> dict[str, Any]:
        # One transaction for all the reads (each read opens one of its own otherwise).
        with doc.transaction():
            meta = doc.get("meta", type=Map).to_py() or {}
            cells = [_plain_cell(ycell, meta) for ycell in doc.get("cells", type=Array)]
        return {
            "cells": cells,
            "metadata": meta.get("metadata") or {},
            "nbformat": int(meta.get("nbformat", 4)),
            "nbformat_minor": int(meta.get("nbformat_minor", 5)),
        }

    def fill(
        self, doc: Doc, content: dict[str, Any], *, cells_at_once: int = 100
    ) -> Iterator[None]:
        """Fill an empty document with a notebook's content, in the current transaction
        of ``doc``, ``cells_at_once`` cells at a time, yielding between them.

        Args:
            doc: An empty document, in a transaction.
            content: The notebook, as ``from_model`` reads it.
            cells_at_once: How many cells go in between two yields.
        """
        self.update(doc, self.content(doc), {**content, "cells": []})
        ycells = doc.get("cells", type=Array)
        cells = content["cells"]
        for start in range(0, len(cells), cells_at_once):
            yield
            _insert_ycells(doc, ycells, start, cells[start : start + cells_at_once])

    def update(self, doc: Doc, old: dict[str, Any], new: dict[str, Any]) -> None:
        ymeta = doc.get("meta", type=Map)
        ycells = doc.get("cells", type=Array)
        with doc.transaction():
            for key in ("nbformat", "nbformat_minor"):
                if key not in ymeta or old.get(key) != new[key]:
                    ymeta[key] = new[key]
            ymetadata = ymeta.get("metadata")
            if isinstance(ymetadata, Map):
                _update_map(ymetadata, old["metadata"], new["metadata"])
            else:
                ymeta["metadata"] = Map(copy.deepcopy(new["metadata"]))
            self._update_cells(doc, ycells, old["cells"], new["cells"])

    def _update_cells(
        self, doc: Doc, ycells: Array, old: list[dict[str, Any]], new: list[dict[str, Any]]
    ) -> None:
        old_ids = [cell.get("id") for cell in old]
        new_ids = [cell.get("id") for cell in new]
        by_id = all(old_ids) and all(new_ids)
        by_id = by_id and len(set(old_ids)) == len(old) and len(set(new_ids)) == len(new)
        if by_id:
            old_keys: list[Any] = old_ids
            new_keys: list[Any] = new_ids
        else:
            # Cells without ids are matched by their type and source; cells that changed
            # in place are then paired by position.
            old_keys = [(cell.get("cell_type"), cell.get("source")) for cell in old]
            new_keys = [(cell.get("cell_type"), cell.get("source")) for cell in new]
        matcher = difflib.SequenceMatcher(None, old_keys, new_keys, autojunk=False)
        # From the end, so that earlier indices stay valid.
        for tag, i1, i2, j1, j2 in reversed(matcher.get_opcodes()):
            paired = i2 - i1 if tag == "equal" else 0
            if tag == "replace" and not by_id:
                paired = min(i2 - i1, j2 - j1)
            for k in range(paired):
                self._update_cell(ycells[i1 + k], old[i1 + k], new[j1 + k])
            if i2 - i1 > paired:
                del ycells[i1 + paired : i2]
            if j2 - j1 > paired:
                _insert_ycells(doc, ycells, i1 + paired, new[j1 + paired : j2])

    @staticmethod
    def _update_cell(ycell: Map, old: dict[str, Any], new: dict[str, Any]) -> None:
        for key in old.keys() - new.keys():
            if key in ycell:
                del ycell[key]
        for key, value in new.items():
            if key in old and old[key] == value and key in ycell:
                continue
            current = ycell.get(key)
            if key == "source" and isinstance(current, Text):
                apply_text_diff(current, str(old.get("source", "")), value)
            elif key == "source":
                ycell["source"] = Text(value)
            elif key == "metadata" and isinstance(current, Map):
                _update_map(current, old.get("metadata") or {}, value)
            elif key == "metadata":
                ycell["metadata"] = Map(copy.deepcopy(value))
            elif key == "outputs" and isinstance(current, Array):
                current.clear()
                current.extend([_youtput(output) for output in value])
            elif key == "outputs":
                ycell["outputs"] = Array([_youtput(output) for output in value])
            else:
                ycell[key] = copy.deepcopy(value)

    def from_model(self, model: dict[str, Any]) -> dict[str, Any]:
        content = model.get("content")
        if not isinstance(content, dict):
            raise DocumentError("the contents manager did not return a notebook")
        notebook: dict[str, Any] = json.loads(json.dumps(content))
        notebook.setdefault("metadata", {})
        notebook.setdefault("nbformat", 4)
        notebook.setdefault("nbformat_minor", 5)
        cells = notebook.setdefault("cells", [])
        if not isinstance(cells, list) or not all(isinstance(cell, dict) for cell in cells):
            raise DocumentError("the notebook's cells are not a list of cells")
        for key in ("orig_nbformat", "orig_nbformat_minor", "signature"):
            notebook["metadata"].pop(key, None)
        for cell in cells:
            # The contents manager marks cells trusted or not; that is not content.
            if isinstance(cell.get("metadata"), dict):
                cell["metadata"].pop("trusted", None)
            if isinstance(cell.get("source"), list):
                cell["source"] = "".join(cell["source"])
        return notebook

    def _units(self, content: dict[str, Any]) -> Iterable[Any]:
        for cell in content.get("cells", []):
            yield (cell.get("id"), cell.get("cell_type"), cell.get("source"))

    def to_model(self, content: dict[str, Any]) -> dict[str, Any]:
        return {"type": "notebook", "format": "json", "content": content}

    def file_bytes(self, content: dict[str, Any]) -> bytes | None:
        # A notebook cut short is not JSON any more: only its bytes can tell it apart
        # from another program's damage. This is what Jupyter's contents manager writes.
        try:
            node = nbformat.from_dict(copy.deepcopy(content))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                text = nbformat.writes(node, version=nbformat.NO_CONVERT)
        except (TypeError, ValueError, AttributeError, KeyError):
            return None
        if not text.endswith("\n"):
            text += "\n"
        return text.encode("utf-8")

    def from_file(self, data: bytes) -> dict[str, Any] | None:
        """Read a notebook file's bytes as ``from_model`` reads the contents manager's
        model of the file, without the manager's other work (its notebook objects, its
        schema validation, which only logs, and its trust check, whose marks
        ``from_model`` drops).

        Args:
            data: The file's bytes.

        Returns:
            The content; ``None`` for anything but a plain version 4 notebook, which the
            contents manager reads differently (converts, repairs, or refuses with its
            own error): read that one through the manager.
        """
        with collector_paused():
            return self._from_file(data)

    def _from_file(self, data: bytes) -> dict[str, Any] | None:
        try:
            notebook = json.loads(data.decode("utf-8"))
        except ValueError:
            return None
        if not isinstance(notebook, dict) or type(notebook.get("nbformat")) is not int:
            return None
        minor = notebook.get("nbformat_minor", 0)
        metadata = notebook.get("metadata")
        cells = notebook.get("cells")
        if notebook["nbformat"] != 4 or type(minor) is not int or not isinstance(metadata, dict):
            return None
        if not isinstance(cells, list) or not all(isinstance(cell, dict) for cell in cells):
            return None
        if minor >= 5:
            # The manager gives cells without ids, or with the same id, ids of their own.
            ids = [cell.get("id") for cell in cells]
            if None in ids or len(set(map(str, ids))) != len(ids):
                return None
        for key in ("orig_nbformat", "orig_nbformat_minor", "signature"):
            metadata.pop(key, None)
        for cell in cells:
            if not _rejoin_cell(cell):
                return None
        notebook.setdefault("nbformat_minor", 5)
        return notebook

    def prepare(self, doc: Doc, content: dict[str, Any] | None = None) -> None:
        if content is not None and _complete(content):
            # Going through every cell of the document takes a while for a large one.
            return
        ymeta = doc.get("meta", type=Map)
        ycells = doc.get("cells", type=Array)
        with doc.transaction():
            if "nbformat" not in ymeta:
                ymeta["nbformat"] = 4
            if "nbformat_minor" not in ymeta:
                ymeta["nbformat_minor"] = 5
            if not isinstance(ymeta.get("metadata"), Map):
                ymeta["metadata"] = Map(ymeta.get("metadata") or {})
            needs_ids = (ymeta["nbformat"], ymeta["nbformat_minor"]) >= (4, 5)
            seen: set[str] = set()
            for ycell in ycells:
                if not isinstance(ycell, Map):
                    continue
                cell_id = ycell.get("id")
                if needs_ids and (not isinstance(cell_id, str) or not cell_id or cell_id in seen):
                    # Concurrent copies of a cell, or cells from a client that gave none.
                    cell_id = uuid4().hex[:8] + "-" + uuid4().hex[:4]
                    ycell["id"] = cell_id
                if isinstance(cell_id, str):
                    seen.add(cell_id)
                if "metadata" not in ycell:
                    ycell["metadata"] = Map()
                if "source" not in ycell:
                    ycell["source"] = Text()
                if ycell.get("cell_type") == "code":
                    if "outputs" not in ycell:
                        ycell["outputs"] = Array()
                    if "execution_count" not in ycell:
                        ycell["execution_count"] = None

    def validate(self, content: dict[str, Any], valid: dict[str, Any] | None = None) -> None:
        if valid is not None and isinstance(valid.get("cells"), list):
            # Cells are checked one by one against the schema: those that passed as
            # they are now need not be checked again (a save of a large notebook would
            # otherwise check all of it for each keystroke's change).
            passed = {cell.get("id"): cell for cell in valid["cells"] if isinstance(cell, dict)}
            passed.pop(None, None)
            content = {
                **content,
                "cells": [
                    cell
                    for cell in content.get("cells", [])
                    if not isinstance(cell, dict) or passed.get(cell.get("id")) != cell
                ],
            }
        version, minor = content.get("nbformat"), content.get("nbformat_minor")
        schema = None
        if type(version) is int and type(minor) is int:
            schema = get_validator(version=version, version_minor=minor)
        try:
            if schema is not None:
                # The notebook's schema, straight on the content: no copies of it (a
                # large notebook's copies cost a tenth of a second, and the garbage
                # collector's passes over them hold every thread of the server).
                schema.validate(content)
            else:
                node = nbformat.from_dict(copy.deepcopy(content))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    nbformat.validate(node)
        except nbformat.ValidationError as exc:
            raise DocumentError(f"not a valid notebook: {exc.message}") from None
        except (TypeError, AttributeError, KeyError) as exc:
            raise DocumentError(f"not a valid notebook: {exc}") from None


def _canonical(update: bytes) -> bytes:
    doc: Doc = Doc()
    doc.apply_update(update)
    return doc.get_update()


class FreeformKind(DocumentKind):
    """Free-form shared state (any root types); the file is an update log."""

    name = "room"
    model_type = "file"
    model_format = "base64"

    def content(self, doc: Doc) -> bytes:
        return doc.get_update()

    def update(self, doc: Doc, old: bytes, new: bytes) -> None:
        doc.apply_update(new)

    def same(self, a: bytes, b: bytes) -> bool:
        return a == b or _canonical(a) == _canonical(b)

    def from_model(self, model: dict[str, Any]) -> bytes:
        data = BlobKind().from_model(model)
        if not data:
            return Doc().get_update()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "room.yroom")
            with open(path, "wb") as file:
                file.write(data)
            try:
                contents = UpdateLog(path).load()
            except LogFormatError as exc:
                raise DocumentError(str(exc).replace(path, "the file")) from None
        if not contents.updates:
            return Doc().get_update()
        update = merge_updates(*contents.updates)
        try:
            validate_update(update)
        except ProtocolError as exc:
            raise DocumentError(f"the file holds an {exc}") from None
        return update

    def to_model(self, content: bytes) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "room.yroom")
            updatelog = UpdateLog(path)
            updatelog.rewrite(content, {"kind": self.name})
            with open(path, "rb") as file:
                data = file.read()
        return BlobKind().to_model(data)


_KINDS: dict[str, DocumentKind] = {
    kind.name: kind for kind in (NotebookKind(), TextKind(), BlobKind(), FreeformKind())
}


def kind_named(name: str) -> DocumentKind:
    """The document kind of a name recorded in a log.

    Args:
        name: ``"notebook"``, ``"text"``, ``"blob"`` or ``"room"``.

    Returns:
        The kind.

    Raises:
        DocumentError: No kind has that name.
    """
    try:
        return _KINDS[name]
    except KeyError:
        raise DocumentError(f"unknown document kind {name!r}") from None


def kind_for_path(path: str, file_format: str | None = None) -> DocumentKind:
    """The document kind of a file.

    Args:
        path: The file's path.
        file_format: For an existing file that is neither a notebook nor a free-form
            room, the format the contents manager reads it in (``"text"`` or
            ``"base64"``); ``None`` for a file that does not exist yet.

    Returns:
        The kind: by extension for notebooks and free-form rooms, by content for other
        existing files, and by what the extension implies for new files.
    """
    suffix = posixpath.splitext(path)[1].lower()
    if suffix == ".ipynb":
        return _KINDS["notebook"]
    if suffix == FREEFORM_SUFFIX:
        return _KINDS["room"]
    if file_format is not None:
        return _KINDS["text" if file_format == "text" else "blob"]
    mimetype = mimetypes.guess_type(path)[0]
    if not suffix or suffix in _TEXT_SUFFIXES or (mimetype or "").startswith("text/"):
        return _KINDS["text"]
    return _KINDS["blob"]
