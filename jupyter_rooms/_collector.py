"""Pausing Python's cyclic garbage collector around bulk work.

Reading a large notebook makes tens of thousands of dicts and lists in a few tens of
milliseconds. Every few hundred of them start a collection of the young objects, and
every so often one of all the objects of the process, which takes 100 ms or more once
a Jupyter server's modules are imported: parsing the benchmarks' 10 MB notebook met
one in 3 of 12 runs (110-120 ms instead of 25-27 ms; 20-23 ms with the collector
paused). What bulk work makes is acyclic (JSON values, a document's contents), so
reference counting frees it anyway: the collector is paused while it runs and goes on
afterwards as before. A pause that lasts more than a few seconds (it covers code that
waits on something else, say a contents manager saving to a network share that hangs)
turns the collector back on, so that garbage with cycles is never left for long.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("jupyter_rooms.collector")

# The longest the collector stays off at a stretch. A pause is meant for tens or hundreds
# of milliseconds of work, but some cover code that is not ours (a contents manager's
# save, which may wait on a network share): past this, the collector goes on again.
LONGEST_PAUSE = 5.0

_lock = threading.Lock()
# How many pauses are under way (in any thread), and whether the collector was on when
# the first of them began (a program that turned it off keeps it off).
_pauses = 0
_resume = False
# Which stretch of pauses is under way, and the timer that ends it if it lasts too long.
_stretch = 0
_timer: threading.Timer | None = None


def _too_long(stretch: int) -> None:
    global _resume
    with _lock:
        if stretch != _stretch or _pauses == 0 or not _resume:
            return
        # The pauses under way still end as usual; the collector is on meanwhile.
        _resume = False
        gc.enable()
    log.warning(
        "the garbage collector was paused for more than %g s (around a large document's "
        "reading or saving that takes long); it runs again",
        LONGEST_PAUSE,
    )


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block (and for every thread: it is one
    for the process); nested and concurrent pauses end with the last of them, and none
    keeps it off for more than ``LONGEST_PAUSE`` seconds at a stretch."""
    global _pauses, _resume, _stretch, _timer
    with _lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
            if _resume:
                _stretch += 1
                _timer = threading.Timer(LONGEST_PAUSE, _too_long, (_stretch,))
                _timer.daemon = True
                try:
                    _timer.start()
                except RuntimeError:
                    # No new threads (the interpreter is exiting): unbounded, as before.
                    _timer = None
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0:
                if _timer is not None:
                    _timer.cancel()
                    _timer = None
                if _resume:
                    gc.enable()
