"""The daemon's malloc arena limit, seen in a child interpreter's own memory map: eight threads that each hold
memory they allocated get arenas of their own unless the limit is set (glibc only: the daemon's platform)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from rollbackd.host.glibc_malloc import operator_chose_arenas

CHILD = """
import ctypes, json, sys, threading
from pathlib import Path
from rollbackd.host.glibc_malloc import limit_malloc_arenas

limited = limit_malloc_arenas() if sys.argv[1] == "limit" else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
all_allocated, done = threading.Barrier(9), threading.Event()

def allocate():
    blocks = [libc.malloc(4096) for _ in range(256)]  # kept until the map is read: live data in its arena
    all_allocated.wait()
    done.wait()

threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
all_allocated.wait()
maps = [line.split() for line in Path("/proc/self/maps").read_text().splitlines()]
anonymous = [(*(int(part, 16) for part in fields[0].split("-")), fields[1]) for fields in maps if len(fields) == 5]
# A thread's arena: an anonymous rw heap at a 64 MiB boundary, the rest of its 64 MiB reserved (---p) after it.
arenas = sum(
    1
    for (start, end, perms), (next_start, next_end, next_perms) in zip(anonymous, anonymous[1:])
    if perms == "rw-p" and start % 2**26 == 0 and next_perms == "---p" and next_start == end
    and next_end - start == 2**26
)
done.set()
print(json.dumps({"limited": limited, "arenas": arenas}))
"""


def run_child(mode: str, **environment: str) -> dict[str, int | bool | None]:
    env = {key: value for key, value in os.environ.items() if not operator_chose_arenas({key: value})}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        capture_output=True,
        text=True,
        env={**env, **environment},
        timeout=60,
        check=True,
    )
    result: dict[str, int | bool | None] = json.loads(child.stdout)
    return result


def test_threads_share_the_one_arena_once_limited() -> None:
    assert run_child("free")["arenas"] > 0  # glibc gives these threads arenas of their own when not limited
    assert run_child("limit") == {"limited": True, "arenas": 0}


def test_an_operators_malloc_arena_max_is_kept() -> None:
    result = run_child("limit", MALLOC_ARENA_MAX="4")
    assert result["limited"] is False
    assert result["arenas"] == 3  # the operator's four: the main arena and three of the threads'
    assert operator_chose_arenas({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})


TRIM_CHILD = """
import ctypes, json
from pathlib import Path
from rollbackd.host.glibc_malloc import PeriodicTrim

def resident_mib():
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
now = [0.0]
trim = PeriodicTrim(60.0, clock=lambda: now[0])
blocks = [libc.malloc(4096) for _ in range(10_000)]  # 40 MiB, as a closed connection's page cache was
for block in blocks:
    libc.memset(block, 1, 4096)
pinned = libc.malloc(4096)  # a live block above them: free() alone cannot shrink the heap
for block in blocks:
    libc.free(block)
freed = resident_mib()
now[0] = 30.0
trim.tick()
early = resident_mib()
now[0] = 60.0
trim.tick()
print(json.dumps({"freed": freed, "early": early, "trimmed": resident_mib()}))
"""


def test_the_periodic_trim_hands_freed_heap_back_once_its_interval_passed() -> None:
    child = subprocess.run([sys.executable, "-c", TRIM_CHILD], capture_output=True, text=True, timeout=60, check=True)
    resident = json.loads(child.stdout)
    assert resident["early"] > resident["freed"] - 5  # before its interval: nothing handed back
    assert resident["trimmed"] < resident["freed"] - 30  # then the 40 MiB freed below the live block
