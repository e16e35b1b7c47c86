"""Update logs: a document's history as an append-only file.

A log starts with an 8-byte header (``JRYLOG`` and a 2-byte format version), followed
by records. A record is a kind byte (an update, or JSON metadata), a 4-byte big-endian
length, the payload, and a CRC-32 of the three. Appends go to the operating system at
once, so a process that is killed loses nothing it had appended; compaction writes a
new file beside the old one and renames it over, so a crash leaves one or the other.

A metadata record that holds nothing but ``time`` (seconds since the epoch) is a time
stamp: the updates after it were made from that time on, until the next stamp. Versions
that do not know stamps take them for metadata, which they ignore.

A record cut short by a crash (or damaged) ends what can be read: every record before
it is loaded, a warning says so, and the next append first cuts the file back to the
last good record so that the log stays readable. When the damage is not at the very
end, the file is first copied aside so that nothing after it is thrown away unseen.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import struct
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

__all__ = ["FORMAT_VERSION", "LogContents", "LogFormatError", "UpdateLog"]

log = logging.getLogger("jupyter_rooms.updatelog")

MAGIC = b"JRYLOG"
FORMAT_VERSION = 1
_HEADER = MAGIC + struct.pack(">H", FORMAT_VERSION)
_RECORD_HEAD = struct.Struct(">BI")
_CRC = struct.Struct(">I")
# A record longer than this is taken as damage rather than allocated.
_MAX_RECORD = 1 << 31
# What reading a record gives when it cannot: cut short, or damaged.
_CUT = -1
_DAMAGED = -2


class RecordKind(IntEnum):
    """What a record holds."""

    UPDATE = 0
    META = 1


class LogFormatError(ValueError):
    """The file is not an update log, or one of a format this version cannot read."""


@dataclass
class LogContents:
    """What a log holds.

    Attributes:
        updates: The updates, in the order they were appended.
        meta: The metadata records merged in order (later keys win).
        times: The time stamps, each as the index in ``updates`` of the first update
            made from that time on, and the time (seconds since the epoch).
        truncated: Whether the file ended in a cut or damaged record, which was left out.
    """

    updates: list[bytes] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    times: list[tuple[int, float]] = field(default_factory=list)
    truncated: bool = False


def _record(kind: RecordKind, payload: bytes) -> list[bytes]:
    """A record as its pieces, the payload not copied (it can be a whole document)."""
    head = _RECORD_HEAD.pack(kind, len(payload))
    return [head, payload, _CRC.pack(zlib.crc32(payload, zlib.crc32(head)))]


def _stamp(time: float | None) -> list[bytes]:
    """A time stamp record's pieces (none without a time)."""
    if time is None:
        return []
    return _record(RecordKind.META, json.dumps({"time": time}).encode())


def _is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _iov_max() -> int:
    """How many pieces one ``writev`` call takes (POSIX allows no fewer than 16)."""
    try:
        return max(os.sysconf("SC_IOV_MAX"), 16)
    except (AttributeError, ValueError, OSError):
        return 16


_IOV_MAX = _iov_max()


def _write_all(fd: int, pieces: list[bytes]) -> None:
    """Write the pieces one after another, whole, without joining them into one copy
    (a large notebook's record is megabytes, which copying holds the GIL for)."""
    if not hasattr(os, "writev"):
        data = memoryview(b"".join(pieces))
        while data:
            data = data[os.write(fd, data) :]
        return
    views = [memoryview(piece) for piece in pieces if piece]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        done = 0
        while done < len(views) and written >= views[done].nbytes:
            written -= views[done].nbytes
            done += 1
        del views[:done]
        if written:
            views[0] = views[0][written:]


class UpdateLog:
    """An append-only log of a document's updates and metadata, in one file.

    Args:
        path: The log's file. It and its directory are created on the first append.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        # Where the last good record ends, when the file has a bad tail to cut first.
        self._good_end: int | None = None
        # Whether what follows it is damage rather than a record cut short.
        self._damaged = False

    @property
    def size(self) -> int:
        """The log's size on disk in bytes (0 when it does not exist)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def load(self) -> LogContents:
        """Read the whole log.

        Returns:
            The updates and metadata (empty when the file does not exist).

        Raises:
            LogFormatError: The file is not an update log, or of an unknown version.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return LogContents()
        if not data:
            return LogContents()
        if len(data) < len(_HEADER) or not data.startswith(MAGIC):
            if MAGIC.startswith(data[: len(MAGIC)]) and len(data) < len(_HEADER):
                # A crash while the header itself was being written.
                log.warning("%s: the log's header was cut short; starting it again", self.path)
                self._good_end = 0
                return LogContents(truncated=True)
            raise LogFormatError(f"{self.path} is not a jupyter_rooms update log")
        (version,) = struct.unpack_from(">H", data, len(MAGIC))
        if version != FORMAT_VERSION:
            raise LogFormatError(
                f"{self.path} is an update log of format version {version}; this version of "
                f"jupyter_rooms reads version {FORMAT_VERSION} (upgrade jupyter_rooms to read it)"
            )
        contents = LogContents()
        pos = len(_HEADER)
        end = len(data)
        while pos < end:
            record_end = self._read_record(data, pos, contents)
            if record_end < 0:
                break
            pos = record_end
        if pos < end:
            contents.truncated = True
            self._good_end = pos
            self._damaged = record_end == _DAMAGED
            log.warning(
                "%s: the log ends in a %s record at byte %d of %d; loaded the %d updates before it",
                self.path,
                "damaged" if self._damaged else "cut",
                pos,
                end,
                len(contents.updates),
            )
        return contents

    @staticmethod
    def _read_record(data: bytes, pos: int, contents: LogContents) -> int:
        """Read the record at ``pos``: where it ends, or ``_CUT`` or ``_DAMAGED``."""
        if pos + _RECORD_HEAD.size > len(data):
            return _CUT
        kind, length = _RECORD_HEAD.unpack_from(data, pos)
        start = pos + _RECORD_HEAD.size
        stop = start + length
        if kind not in RecordKind._value2member_map_ or length > _MAX_RECORD:
            return _DAMAGED
        if stop + _CRC.size > len(data):
            return _CUT
        head = data[pos:start]
        payload = data[start:stop]
        (crc,) = _CRC.unpack_from(data, stop)
        if crc != zlib.crc32(payload, zlib.crc32(head)):
            return _DAMAGED
        if kind == RecordKind.UPDATE:
            contents.updates.append(payload)
        else:
            try:
                meta = json.loads(payload)
            except ValueError:
                return _DAMAGED
            # A whole record that holds no JSON object is not one this version writes:
            # it is skipped, and what comes after it is still read.
            if isinstance(meta, dict):
                if meta.keys() == {"time"} and _is_time(meta["time"]):
                    contents.times.append((len(contents.updates), float(meta["time"])))
                else:
                    contents.meta.update(meta)
        return stop + _CRC.size

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if self._good_end is not None and self._good_end < size:
                self._set_aside_damage()
                os.ftruncate(fd, self._good_end)
                size = self._good_end
            self._good_end = None
            self._damaged = False
            if size == 0:
                _write_all(fd, [_HEADER])
                size = len(_HEADER)
            os.lseek(fd, size, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _set_aside_damage(self) -> None:
        # A record cut short is what a crash leaves, and nothing after it was written;
        # damage may hide good records after it: keep a copy of the file to inspect.
        if self._damaged:
            backup = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
            shutil.copyfile(self.path, backup)
            log.warning("%s: copied the damaged log to %s before repairing it", self.path, backup)

    def append(
        self,
        updates: Iterable[bytes] = (),
        meta: dict[str, Any] | None = None,
        *,
        time: float | None = None,
    ) -> None:
        """Append updates, then optionally a metadata record, in one write.

        Args:
            updates: Updates to append, in order.
            meta: JSON-serialisable metadata; on load, its keys override earlier ones.
            time: When the updates were made (seconds since the epoch), written as a
                time stamp before them; by default the last stamp's time goes on.

        Raises:
            OSError: The file could not be written; the log is left as it was.
        """
        pieces = [piece for update in updates for piece in _record(RecordKind.UPDATE, update)]
        if meta is not None:
            pieces += _record(RecordKind.META, json.dumps(meta).encode())
        if not pieces:
            return
        pieces[:0] = _stamp(time)
        fd = self._open()
        start = os.lseek(fd, 0, os.SEEK_CUR)
        try:
            _write_all(fd, pieces)
        except BaseException:
            # A write that failed part way (a full disk) must not leave a piece of a
            # record for later ones to follow: cut it off now, or on the next open.
            self._good_end = start
            self.close()
            try:
                os.truncate(self.path, start)
            except OSError:
                pass
            else:
                self._good_end = None
            raise

    def sync(self) -> None:
        """Ask the operating system to put what was appended on disk (survives power loss)."""
        if self._fd is not None:
            os.fsync(self._fd)

    def rewrite(self, update: bytes, meta: dict[str, Any], *, time: float | None = None) -> None:
        """Replace the whole log with one update and one metadata record, atomically.

        Args:
            update: The update that stands for everything before (the document's state).
            meta: The metadata to keep, in full (it is not merged with the old).
            time: The time of the document's state (seconds since the epoch), written
                as a time stamp before the update.
        """
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._good_end is not None and self.path.exists():
            # What follows damage is about to be replaced, like a repairing append would.
            self._set_aside_damage()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        pieces = [_HEADER, *_stamp(time), *_record(RecordKind.UPDATE, update)]
        pieces += _record(RecordKind.META, json.dumps(meta).encode())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                _write_all(fd, pieces)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            # The log is as it was: leave no half-written copy beside it.
            tmp.unlink(missing_ok=True)
            raise
        self._good_end = None
        self._damaged = False
        try:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        """Close the file (the next append opens it again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
