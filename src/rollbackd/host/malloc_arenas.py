"""glibc's malloc arenas, limited for a daemon whose threads mostly wait (issue 13: the daemon's memory).

glibc gives a thread that finds the arena it wants locked an arena of its own, up to eight per core, and each
arena keeps what was freed in it for later use by whichever thread next lands on it. The daemon's worker
threads open SQLite connections for the probes and backups and close them again, so every worker's arena ends up
holding a page cache's worth of freed memory: with 20 services the threads' arenas held 17.6 MiB of a 77 MiB
daemon, and with one arena for all threads the daemon measured 66 MiB (bench/RESULTS.md, "Issue 13, lazy").
The threads seldom contend for that one arena's lock: they wait on SQLite, the network or the GIL.

An operator's own choice wins: ``MALLOC_ARENA_MAX`` or ``glibc.malloc.arena_max`` in ``GLIBC_TUNABLES``. On
another C library (musl, macOS) there is no ``mallopt`` arena option and nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

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
