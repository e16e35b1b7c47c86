"""The collector is paused around bulk work (reading and building large notebooks), and
goes on as before afterwards, whatever else pauses it meanwhile."""

from __future__ import annotations

import gc
import logging
import threading
import time

import pytest

from jupyter_rooms import _collector
from jupyter_rooms._collector import collector_paused


@pytest.fixture(autouse=True)
def _collector_on():
    gc.enable()
    yield
    gc.enable()


def test_the_collector_is_off_in_the_block_and_on_after_it_even_on_error() -> None:
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError), collector_paused():
        raise KeyError("boom")
    assert gc.isenabled()


def test_overlapping_pauses_in_two_threads_end_with_the_last() -> None:
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with collector_paused():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    with collector_paused():
        thread.start()
        assert inside.wait(10)
    # This thread's pause is over; the other's is not.
    assert not gc.isenabled()
    leave.set()
    thread.join(10)
    assert gc.isenabled()


def test_a_program_that_turned_the_collector_off_keeps_it_off() -> None:
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_a_pause_that_lasts_too_long_turns_the_collector_back_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_collector, "LONGEST_PAUSE", 0.1)
    with caplog.at_level(logging.WARNING, "jupyter_rooms.collector"), collector_paused():
        assert not gc.isenabled()
        deadline = time.monotonic() + 10
        while not gc.isenabled() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gc.isenabled()
        # A pause that begins meanwhile leaves it on: the stretch is over.
        with collector_paused():
            assert gc.isenabled()
    assert gc.isenabled()
    assert "paused for more than 0.1 s" in caplog.text
    # The next stretch pauses it again, for as long.
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_short_pause_leaves_no_timer_behind(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_collector, "LONGEST_PAUSE", 1.0)
    with caplog.at_level(logging.WARNING, "jupyter_rooms.collector"):
        with collector_paused():
            pass
        time.sleep(0.5)
        with collector_paused():
            # Past when the first pause's timer would have ended it, before this one's.
            time.sleep(0.75)
            assert not gc.isenabled()
    assert gc.isenabled()
    assert caplog.text == ""
