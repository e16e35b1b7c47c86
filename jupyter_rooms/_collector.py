"""Pausing Python's cyclic garbage collector around bulk work.

Reading a large notebook makes tens of thousands of dicts and lists in a few tens of
milliseconds. Every few hundred of them start a collection of the young objects, and
every so often one of all the objects of the process, which takes 100 ms or more once
a Jupyter server's modules are imported: parsing the benchmarks' 10 MB notebook met
one in 3 of 12 runs (110-120 ms instead of 25-27 ms; 20-23 ms with the collector
paused). What bulk work makes is acyclic (JSON values, a document's contents), so
reference counting frees it anyway: the collector is paused while it runs and goes on
afterwards as before.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
# How many pauses are under way (in any thread), and whether the collector was on when
# the first of them began (a program that turned it off keeps it off).
_pauses = 0
_resume = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block (and for every thread: it is one
    for the process); nested and concurrent pauses end with the last of them."""
    global _pauses, _resume
    with _lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()
