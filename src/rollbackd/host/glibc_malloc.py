"""glibc's allocator, told what a long-running daemon whose threads mostly wait wants (issue 13: its memory).

One arena for all threads. glibc gives a thread that finds the arena it wants locked an arena of its own, up to
eight per core, and each arena keeps what was freed in it for later use by whichever thread next lands on it. The
daemon's worker threads open SQLite connections for the probes and backups and close them again, so every
worker's arena ends up holding a page cache's worth of freed memory: with 20 services the threads' arenas held
17.6 MiB of a 77 MiB daemon, and with one arena for all threads the daemon measured 66 MiB (bench/RESULTS.md,
"Issue 13, lazy"). The threads seldom contend for that one arena's lock: they wait on SQLite, the network or the
GIL. An operator's own choice wins: ``MALLOC_ARENA_MAX`` or ``glibc.malloc.arena_max`` in ``GLIBC_TUNABLES``.

Free memory handed back now and then. free() returns memory to the kernel only from the top of the heap; what a
closed connection freed below a live block stays resident until ``malloc_trim`` gives its pages back.

On another C library (musl, macOS) there is no such ``mallopt`` option or ``malloc_trim``, and nothing is done.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable, Mapping

M_ARENA_MAX = -8  # glibc's malloc.h
DAEMON_ARENAS = 1


def operator_chose_arenas(environ: Mapping[str, str]) -> bool:
    """True when the environment already sets the arena limit (glibc read it at start-up)."""
    return "MALLOC_ARENA_MAX" in environ or "glibc.malloc.arena_max" in environ.get("GLIBC_TUNABLES", "")


def limit_malloc_arenas(count: int = DAEMON_ARENAS, environ: Mapping[str, str] = os.environ) -> bool:
    """Let this process have at most ``count`` malloc arenas, unless ``environ`` already sets a limit. Call it
    before the threads start: an arena a thread already has stays. Return whether the limit was set here."""
    if operator_chose_arenas(environ):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the process's own symbols: the C library's
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, count))


def _trim_function() -> Callable[[int], int] | None:
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


class PeriodicTrim:
    """A tick listener that hands the heap's free pages back to the kernel (``malloc_trim(0)``) at most every
    ``every`` seconds: the first time ``every`` seconds after it was made, once start-up's garbage is free."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.last = clock()
        self._trim = _trim_function()

    def tick(self) -> None:
        now = self.clock()
        if self._trim is not None and now - self.last >= self.every:
            self.last = now
            self._trim(0)
