"""The file wire and the update log under it: round trips, compaction, bad files, crashes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pycrdt import Array, Doc, Map, Text

from jupyter_rooms import connect
from jupyter_rooms.updatelog import LogFormatError, RecordKind, UpdateLog, _record
from jupyter_rooms.wires.file import TruncatedLogWarning

pytestmark = pytest.mark.anyio


async def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "doc.ylog"
    async with connect("file", doc=Doc(), path=path) as client:
        text = client.doc.get("text", type=Text)
        text += "hello"
        text.insert(0, ">> ")
        client.doc.get("map", type=Map)["k"] = [1, 2]
        client.doc.get("array", type=Array).append("x")
    assert path.exists()

    async with connect("file", path=path) as client:
        assert str(client.doc.get("text", type=Text)) == ">> hello"
        assert client.doc.get("map", type=Map).to_py() == {"k": [1.0, 2.0]}
        assert client.doc.get("array", type=Array).to_py() == ["x"]


async def test_existing_content_of_the_doc_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "doc.ylog"
    async with connect("file", path=path) as client:
        client.doc.get("text", type=Text).insert(0, "from the log")

    doc = Doc()
    doc.get("other", type=Text).insert(0, "from the doc")
    async with connect("file", doc=doc, path=path):
        assert str(doc.get("text", type=Text)) == "from the log"

    async with connect("file", path=path) as client:
        assert str(client.doc.get("other", type=Text)) == "from the doc"
        assert str(client.doc.get("text", type=Text)) == "from the log"


async def test_each_change_is_on_disk_at_once(tmp_path: Path) -> None:
    path = tmp_path / "doc.ylog"
    async with connect("file", path=path) as client:
        text = client.doc.get("text", type=Text)
        for char in "abc":
            text += char
            # Another reader sees every change while the client is still open.
            doc = Doc()
            for update in UpdateLog(path).load().updates:
                doc.apply_update(update)
            assert str(doc.get("text", type=Text)) == str(text)


async def test_write_delay_gathers_changes(tmp_path: Path) -> None:
    path = tmp_path / "doc.ylog"
    async with connect("file", path=path, write_delay=60) as client:
        text = client.doc.get("text", type=Text)
        for char in "abcdef":
            text += char
        assert UpdateLog(path).load().updates == []
    # Leaving writes what was gathered, as one update.
    updates = UpdateLog(path).load().updates
    assert len(updates) == 1
    async with connect("file", path=path) as client:
        assert str(client.doc.get("text", type=Text)) == "abcdef"


async def test_push_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "doc.ylog"
    async with connect("file", path=path, auto_push=False) as client:
        client.doc.get("text", type=Text).insert(0, "later")
        assert UpdateLog(path).load().updates == []
        await client.push()
        assert len(UpdateLog(path).load().updates) == 1


async def test_squash_compacts_the_log(tmp_path: Path) -> None:
    path = tmp_path / "doc.ylog"
    async with connect("file", path=path) as client:
        text = client.doc.get("text", type=Text)
        for i in range(200):
            text += str(i % 10)
    assert len(UpdateLog(path).load().updates) == 200
    size_before = path.stat().st_size

    async with connect("file", path=path, squash=True) as client:
        assert len(UpdateLog(path).load().updates) == 1
        client.doc.get("text", type=Text).insert(0, "!")
    assert len(UpdateLog(path).load().updates) == 1
    assert path.stat().st_size < size_before

    async with connect("file", path=path) as client:
        expected = "!" + "".join(str(i % 10) for i in range(200))
        assert str(client.doc.get("text", type=Text)) == expected


async def test_unknown_version_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "doc.ylog"
    path.write_bytes(b"JRYLOG\x00\x63" + b"\x00" * 20)
    with pytest.raises(LogFormatError, match="version 99"):
        async with connect("file", path=path):
            pass
    assert path.read_bytes() == b"JRYLOG\x00\x63" + b"\x00" * 20


async def test_not_a_log_is_a_clear_error_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("my precious notes\n")
    with pytest.raises(LogFormatError, match="not a jupyter_rooms update log"):
        async with connect("file", path=path):
            pass
    assert path.read_text() == "my precious notes\n"


@pytest.mark.parametrize("cut", [1, 5, 9, 12])
async def test_cut_tail_keeps_every_complete_update(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "doc.ylog"
    async with connect("file", path=path) as client:
        text = client.doc.get("text", type=Text)
        for char in "abcde":
            text += char
    # A crash in the middle of the last write leaves part of its record.
    data = path.read_bytes()
    path.write_bytes(data[:-cut])

    with pytest.warns(TruncatedLogWarning, match="4 complete updates"):
        async with connect("file", path=path) as client:
            text = client.doc.get("text", type=Text)
            assert str(text) == "abcd"
            text += "X"

    # The next write repaired the tail instead of appending after the damage.
    contents = UpdateLog(path).load()
    assert not contents.truncated
    async with connect("file", path=path) as client:
        assert str(client.doc.get("text", type=Text)) == "abcdX"


@pytest.mark.parametrize("squash", [False, True])
async def test_damage_before_good_records_is_set_aside(tmp_path: Path, squash: bool) -> None:
    path = tmp_path / "doc.ylog"
    async with connect("file", path=path) as client:
        text = client.doc.get("text", type=Text)
        for char in "abc":
            text += char
    data = bytearray(path.read_bytes())
    # Flip a byte inside the second record's payload.
    first_len = int.from_bytes(data[9:13], "big")
    second = 8 + 5 + first_len + 4
    data[second + 6] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.warns(TruncatedLogWarning):
        async with connect("file", path=path, squash=squash) as client:
            assert str(client.doc.get("text", type=Text)) == "a"
            client.doc.get("text", type=Text).insert(1, "Z")
    backups = list(tmp_path.glob("doc.ylog.damaged-*"))
    assert len(backups) == 1
    assert backups[0].read_bytes() == bytes(data)
    async with connect("file", path=path) as client:
        assert str(client.doc.get("text", type=Text)) == "aZ"


def test_a_compaction_that_fails_leaves_the_log_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "doc.ylog"
    log = UpdateLog(path)
    log.append([b"\x00\x00"], meta={"n": 1})
    log.close()
    before = path.read_bytes()

    def disk_full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    monkeypatch.setattr(os, "writev", disk_full)
    with pytest.raises(OSError, match="No space"):
        log.rewrite(b"\x00\x00", {"n": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["doc.ylog"]


def test_killed_writer_loses_nothing_it_appended(tmp_path: Path) -> None:
    path = tmp_path / "doc.ylog"
    script = textwrap.dedent(
        f"""
        import os, signal, anyio
        from pycrdt import Text
        from jupyter_rooms import connect

        async def main():
            async with connect("file", path={str(path)!r}) as client:
                text = client.doc.get("text", type=Text)
                for i in range(500):
                    text += "x"
                os.kill(os.getpid(), signal.SIGKILL)

        anyio.run(main)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert result.returncode == -9
    doc = Doc()
    contents = UpdateLog(path).load()
    assert not contents.truncated
    for update in contents.updates:
        doc.apply_update(update)
    assert str(doc.get("text", type=Text)) == "x" * 500


def test_log_file_is_private(tmp_path: Path) -> None:
    log = UpdateLog(tmp_path / "doc.ylog")
    log.append([b"\x00\x00"])
    log.close()
    assert os.stat(tmp_path / "doc.ylog").st_mode & 0o077 == 0


class FailingWrites:
    """``os.write`` and ``os.writev`` on a disk that fills up: they write ``budget`` bytes
    more, then fail; a write that reaches the end of the budget is cut short there, and
    none writes more than ``most`` bytes at a time (as a write may)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, budget: int, most: int = 1 << 30) -> None:
        self.budget = budget
        self.most = most
        self._write = os.write
        monkeypatch.setattr(os, "write", self.write)
        monkeypatch.setattr(os, "writev", self.writev)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self.budget <= 0:
            raise OSError(28, "No space left on device")
        written = self._write(fd, bytes(data[: min(self.budget, self.most)]))
        self.budget -= written
        return written

    def writev(self, fd: int, buffers: list[memoryview]) -> int:
        return self.write(fd, b"".join(buffers))


@pytest.mark.parametrize("budget", [0, 3, 20])
def test_an_append_that_fails_part_way_leaves_no_piece_of_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    log = UpdateLog(tmp_path / "doc.ylog")
    log.append([b"first"])
    failing = FailingWrites(monkeypatch, budget)
    with pytest.raises(OSError, match="No space"):
        log.append([b"x" * 100])
    failing.budget = 1 << 20
    log.append([b"third"])
    log.close()
    contents = UpdateLog(tmp_path / "doc.ylog").load()
    assert not contents.truncated
    assert contents.updates == [b"first", b"third"]


@pytest.mark.parametrize("most", [1, 7, 4096])
def test_writes_cut_short_are_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, most: int
) -> None:
    updates = [bytes([i % 256]) * (i * 37 % 5000) for i in range(40)]
    FailingWrites(monkeypatch, 1 << 30, most=most)
    log = UpdateLog(tmp_path / "doc.ylog")
    log.append(updates[:20], meta={"n": 1})
    log.append(updates[20:], meta={"n": 2})
    log.close()
    contents = UpdateLog(tmp_path / "doc.ylog").load()
    assert (contents.updates, contents.meta, contents.truncated) == (updates, {"n": 2}, False)
    log.rewrite(updates[0], {"n": 3})
    contents = UpdateLog(tmp_path / "doc.ylog").load()
    assert (contents.updates, contents.meta, contents.truncated) == ([updates[0]], {"n": 3}, False)


def test_an_append_of_many_updates_at_once(tmp_path: Path) -> None:
    # More records than one system call takes pieces (each record is three).
    updates = [i.to_bytes(4, "big") for i in range(5000)]
    log = UpdateLog(tmp_path / "doc.ylog")
    log.append(updates, meta={"many": True})
    log.close()
    contents = UpdateLog(tmp_path / "doc.ylog").load()
    assert contents.updates == updates
    assert contents.meta == {"many": True}


async def test_a_change_the_disk_refused_is_written_with_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "doc.ylog"
    async with connect("file", path=path) as client:
        text = client.doc.get("text", type=Text)
        text += "ab"
        failing = FailingWrites(monkeypatch, 4)
        # The change is made; writing it fails, and says so.
        with pytest.raises(BaseException) as info:
            text += "c"
        assert "No space" in repr(info.value)
        assert str(text) == "abc"
        failing.budget = 1 << 20
        text += "d"
    contents = UpdateLog(path).load()
    assert not contents.truncated
    async with connect("file", path=path) as client:
        assert str(client.doc.get("text", type=Text)) == "abcd"


def test_time_stamps_say_when_the_updates_after_them_were_made(tmp_path: Path) -> None:
    updatelog = UpdateLog(tmp_path / "doc.ylog")
    updatelog.rewrite(b"base", {"epoch": "e"}, time=100.0)
    updatelog.append([b"u1", b"u2"], time=200.5)
    updatelog.append([b"u3"])
    updatelog.append([b"u4"], meta={"saved": 1}, time=300)
    updatelog.append([], time=400.0)  # nothing to stamp: nothing written
    updatelog.close()
    contents = UpdateLog(updatelog.path).load()
    assert contents.updates == [b"base", b"u1", b"u2", b"u3", b"u4"]
    assert contents.times == [(0, 100.0), (1, 200.5), (4, 300.0)]
    # Stamps are not metadata; a record that only looks like one is.
    assert contents.meta == {"epoch": "e", "saved": 1}
    updatelog.append(meta={"time": True})
    updatelog.append(meta={"time": 500.0, "other": 1})
    updatelog.close()
    contents = UpdateLog(updatelog.path).load()
    assert contents.times == [(0, 100.0), (1, 200.5), (4, 300.0)]
    assert contents.meta == {"epoch": "e", "saved": 1, "time": 500.0, "other": 1}


def test_a_whole_record_of_another_shape_is_skipped(tmp_path: Path) -> None:
    # A metadata record that is whole (its checksum holds) but holds no JSON object is
    # not one this version writes: it is passed over, and the records after it count.
    updatelog = UpdateLog(tmp_path / "doc.ylog")
    updatelog.rewrite(b"base", {"epoch": "e"})
    updatelog.close()
    with open(updatelog.path, "ab") as log:
        for payload in (b"[1, 2]", b'"text"', b"3"):
            log.write(b"".join(_record(RecordKind.META, payload)))
    updatelog.append([b"u1"], meta={"saved": 1})
    updatelog.close()
    contents = UpdateLog(updatelog.path).load()
    assert contents.updates == [b"base", b"u1"]
    assert contents.meta == {"epoch": "e", "saved": 1}
    assert not contents.truncated
