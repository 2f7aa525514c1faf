"""What SQLite's page cache costs a probe's connection, and what a small one costs in CPU (issue 13).

Builds a ~32 MiB database (one table, one index, WAL) in a temp dir, then per cache size opens connections as the
probes open theirs (``connect_readonly``: ``mode=ro``, ``query_only``) and measures the C heap the open
connection holds after quick_check + foreign_key_check + count(*) (glibc's ``mallinfo2``, this thread's main
arena) and the CPU time of each statement on a fresh connection, averaged over ``--rounds``.

    .venv/bin/python bench/page_cache_cost.py --rounds 6
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from rollbackd.target.database import SCAN_CACHE_KIB, connect_readonly  # noqa: E402

STATEMENTS = ("PRAGMA quick_check(100)", "PRAGMA integrity_check(100)", "SELECT count(*) FROM players")


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def heap_in_use() -> int:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def build(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE players (id INTEGER PRIMARY KEY, room INTEGER, name TEXT, score INTEGER)")
        connection.execute("CREATE INDEX players_room ON players (room)")
        rows = ((index % 997, f"player-{index:09d}-" + "x" * 40, index) for index in range(400_000))
        connection.executemany("INSERT INTO players (room, name, score) VALUES (?, ?, ?)", rows)
        connection.commit()


def held_by_connection(path: Path, cache_kib: int | None) -> int:
    before = heap_in_use()
    with contextlib.closing(connect_readonly(path, cache_kib=cache_kib)) as connection:
        for statement in ("PRAGMA quick_check(100)", "PRAGMA foreign_key_check", "SELECT count(*) FROM players"):
            connection.execute(statement).fetchall()
        return heap_in_use() - before


def cpu_ms(path: Path, cache_kib: int | None, statement: str, rounds: int) -> float:
    total = 0.0
    for _ in range(rounds):
        with contextlib.closing(connect_readonly(path, cache_kib=cache_kib)) as connection:
            started = time.process_time()
            connection.execute(statement).fetchall()
            total += time.process_time() - started
    return total / rounds * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="page-cache-") as root:
        path = Path(root) / "players.db"
        build(path)
        print(f"database {path.stat().st_size / 2**20:.1f} MiB")
        for cache_kib in (None, SCAN_CACHE_KIB, None, SCAN_CACHE_KIB):  # alternated: the machine is shared
            label = f"{cache_kib} KiB" if cache_kib else "SQLite's default"
            held = held_by_connection(path, cache_kib) / 2**20
            times = ", ".join(f"{s.split('(')[0]} {cpu_ms(path, cache_kib, s, args.rounds):.1f} ms" for s in STATEMENTS)
            print(f"cache {label:<17} held {held:.2f} MiB; CPU {times}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
