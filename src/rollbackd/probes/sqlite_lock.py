"""Who holds the SQLite write lock, and for how long, without taking a lock or opening the database.

SQLite's locks are POSIX advisory locks on fixed bytes (verified here with a real ``BEGIN IMMEDIATE`` holder):
rollback-journal mode write-locks byte 0x40000001 (RESERVED) of the database file, and 0x40000000 (PENDING) on
its way to EXCLUSIVE; WAL mode write-locks byte 120 of the ``-shm`` file (WAL_WRITE_LOCK). The kernel lists them
in /proc/locks with the holder's pid, so this probe reads that table and never touches the database: opening and
closing any fd of it would drop the POSIX locks of the daemon's own SQLite connections (backups, checks), and even
a brief read transaction can make a writer's commit fail with SQLITE_BUSY in rollback-journal mode. The daemon's
lock probes share their reads of the table (proc_locks.SharedProcLocks): one may see a read up to 0.25 s old that
another service's probe took, never the one it used itself last time. The lock probes of all services run in
one thread hop per turn of the loop (probes/lock_rounds.py); the holders' and readers' names are looked up in that
hop too, and only for pids the table lists, never on the event loop.

Where /proc/locks cannot be read, a short-lived subprocess tries ``BEGIN IMMEDIATE`` with no busy timeout and
rolls back at once (method ``begin_immediate`` in the detail); that does take the lock for an instant and cannot
name the holder.

The journal mode comes from the side files (``-wal``/``-shm`` exist while a WAL database is open); when there are
none, from bytes 18-19 of the header read by a subprocess (cached per inode). /proc/locks cannot say when a lock
was taken, so "held for" is the time since this probe first saw the same holder(s) holding it: a writer that
commits and begins again between two runs looks like one long hold.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from rollbackd.config.model import ServiceConfig
from rollbackd.host.commands import run_command
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.probes.base import DEFAULT_TIMEOUT, ProbeContext
from rollbackd.probes.proc_locks import PROC_LOCKS, FileLock, SharedProcLocks, file_id

log = logging.getLogger(__name__)

PENDING_BYTE = 0x40000000
RESERVED_BYTE = 0x40000001
WAL_WRITE_LOCK_BYTE = 120
# A WAL reader holds a READ lock on its read mark, bytes 123 + N of -shm (N = 0-4) for its whole read transaction:
# a checkpoint cannot pass what the reader sees (mark 0: the database file itself, so nothing can be copied back),
# which is how one long read transaction makes the WAL grow without bound. Byte 128 (DMS) is held by every open
# connection and says nothing about transactions.
WAL_READ_MARK_BYTES = (123, 124, 125, 126, 127)
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")
# A write lock held longer than this makes the observation fail (reason lock_held). The policy's rule threshold
# decides what to do about it; this only keeps the probe's ok/not-ok meaningful on its own (a migration or a
# bulk import legitimately holds it for seconds, an app stuck in a transaction for much longer).
HELD_THRESHOLD = 30.0

_HEADER_SCRIPT = "import sys\nwith open(sys.argv[1], 'rb') as f:\n    f.seek(18)\n    print(f.read(2).hex())"
_BEGIN_IMMEDIATE_SCRIPT = """\
import sqlite3, sys
from urllib.parse import quote
connection = sqlite3.connect("file:" + quote(sys.argv[1]) + "?mode=rw", uri=True, timeout=0, isolation_level=None)
try:
    connection.execute("BEGIN IMMEDIATE")
except sqlite3.OperationalError as error:
    print("held" if "locked" in str(error) or "busy" in str(error) else "error: " + str(error))
else:
    connection.execute("ROLLBACK")
    print("free")
connection.close()
"""


@dataclass(frozen=True)
class LockState:
    method: str  # proc_locks or begin_immediate
    held: bool
    holders: tuple[int, ...]  # pids; empty when held but unknown (begin_immediate, OFD locks)
    journal_mode: str  # wal, rollback, unknown
    wal_size: int
    hot_journal: bool
    database_size: int = 0
    wal_readers: tuple[int, ...] = ()  # pids holding a WAL read mark that pins the WAL (proc_locks only)
    names: dict[int, str | None] = field(default_factory=dict)  # pid -> process name, of the holders and readers


class _NeedsOwnHop(Exception):
    """A quick inspection came to a part that runs a subprocess: it is done again in a thread hop of its own."""


class SqliteLockProbe:
    name = "sqlite_lock"

    def __init__(
        self,
        service: ServiceConfig,
        context: ProbeContext,
        proc_locks: Path = PROC_LOCKS,
        held_threshold: float = HELD_THRESHOLD,
    ) -> None:
        self.service = service.name
        self.interval = service.probes.sqlite_lock.every
        self.timeout = DEFAULT_TIMEOUT
        self.database = service.database
        self.proc_locks = proc_locks
        self._table = context.proc_locks if proc_locks == context.proc_locks.path else SharedProcLocks(proc_locks)
        self._rounds = context.lock_rounds
        self._table_unreadable = False  # the last run fell back to BEGIN IMMEDIATE: its own hop, not a round's
        self._table_read_at = -math.inf  # when the lock table this probe last used was read
        self.held_threshold = held_threshold
        self._clock: Callable[[], float] = context.clock
        self._holders: tuple[int, ...] | None = None  # None: free at the last run
        self._held_since = 0.0
        self._header_mode: dict[int, str] = {}  # inode -> journal mode from the header

    async def run(self) -> Observation:
        try:
            try:
                if self._table_unreadable:
                    raise _NeedsOwnHop
                state = await self._rounds.run(self._inspect_quickly)
            except _NeedsOwnHop:
                state = await asyncio.to_thread(self.inspect)
        except FileNotFoundError as error:
            self._holders = None
            return Observation(self.service, self.name, ok=False, reason="unavailable", detail={"error": str(error)})
        now = self._clock()
        if not state.held:
            self._holders = None
        elif self._holders != state.holders:
            self._holders, self._held_since = state.holders, now
        held_seconds = now - self._held_since if state.held else 0.0
        values = {
            "held": float(state.held),
            "held_seconds": held_seconds,
            "wal_size_bytes": float(state.wal_size),
            "hot_journal": float(state.hot_journal),
            "database_size_bytes": float(state.database_size),
        }
        detail: dict[str, object] = {
            "method": state.method,
            "journal_mode": state.journal_mode,
            "holders": [{"pid": pid, "name": state.names.get(pid)} for pid in state.holders],
            "wal_readers": [{"pid": pid, "name": state.names.get(pid)} for pid in state.wal_readers],
        }
        if state.held:
            detail["held_since"] = self._held_since
        reason = ""
        if state.held and held_seconds > self.held_threshold:
            reason = "lock_held"
        elif state.hot_journal:
            reason = "hot_journal"
        return Observation(self.service, self.name, ok=not reason, reason=reason, values=values, detail=detail)

    def _inspect_quickly(self) -> LockState:
        return self.inspect(quick=True)

    def inspect(self, *, quick: bool = False) -> LockState:
        """Return the lock state now. Raise FileNotFoundError when the database does not exist; with ``quick``
        (in a shared round), raise _NeedsOwnHop before running a subprocess."""
        database_stat = os.stat(self.database)
        shm, wal, journal = (Path(f"{self.database}{suffix}") for suffix in ("-shm", "-wal", "-journal"))
        shm_stat = _stat_or_none(shm)
        wal_stat = _stat_or_none(wal)
        side_files = shm_stat is not None or wal_stat is not None
        if quick and not side_files and database_stat.st_ino not in self._header_mode:
            raise _NeedsOwnHop  # the header is read by a subprocess
        journal_mode = self._journal_mode(database_stat, side_files)
        journal_before = _journal_signature(journal)
        try:
            # A journal's presence asks for a read taken after it was seen (the hot-journal test below brackets
            # the lock read); otherwise a read another service's probe took a moment ago will do.
            self._table_read_at, locks = self._table.read(None if journal_before is not None else self._table_read_at)
        except OSError:
            if quick:
                raise _NeedsOwnHop from None  # BEGIN IMMEDIATE is tried in a subprocess
            self._table_unreadable = True
            held = self._begin_immediate_held()
            wal_size = wal_stat.st_size if wal_stat else 0
            return LockState("begin_immediate", held, (), journal_mode, wal_size, False, database_stat.st_size)
        self._table_unreadable = False
        database_writers = _writers(locks, database_stat, (RESERVED_BYTE, PENDING_BYTE))
        shm_writers = _writers(locks, shm_stat, (WAL_WRITE_LOCK_BYTE,)) if shm_stat else set()
        holders = database_writers | shm_writers
        held = bool(holders)
        # A journal with a valid header and no writer behind it was left by a writer that died mid-transaction.
        # Checked on both sides of the lock read so a transaction that begins meanwhile is not mistaken for one.
        hot = journal_before is not None and not database_writers and _journal_signature(journal) == journal_before
        pids = tuple(sorted(pid for pid in holders if pid is not None))
        readers = _holders(locks, shm_stat, WAL_READ_MARK_BYTES, "READ") if shm_stat else set()
        reader_pids = tuple(sorted(pid for pid in readers if pid is not None))
        return LockState(
            "proc_locks",
            held,
            pids,
            journal_mode,
            wal_stat.st_size if wal_stat else 0,
            hot,
            database_stat.st_size,
            reader_pids,
            {pid: _process_name(pid) for pid in (*pids, *reader_pids)},
        )

    def _journal_mode(self, database_stat: os.stat_result, side_files: bool) -> str:
        if side_files:
            self._header_mode.pop(database_stat.st_ino, None)  # a later switch back to rollback mode is re-read
            return "wal"
        cached = self._header_mode.get(database_stat.st_ino)
        if cached is None:
            result = run_command([sys.executable, "-I", "-S", "-c", _HEADER_SCRIPT, str(self.database)], timeout=5)
            header = result.output_tail.strip() if result.ok else ""
            cached = {"0202": "wal", "0101": "rollback"}.get(header, "unknown")
            if cached != "unknown":
                self._header_mode[database_stat.st_ino] = cached
        return cached

    def _begin_immediate_held(self) -> bool:
        argv = [sys.executable, "-I", "-S", "-c", _BEGIN_IMMEDIATE_SCRIPT, str(self.database)]
        result = run_command(argv, timeout=self.timeout)
        answer = result.output_tail.strip()
        if answer not in ("held", "free"):
            log.warning("begin_immediate lock check of %s failed: %s %s", self.database, result.summary(), answer)
        return answer == "held"

    def export(self, metrics: Metrics, observation: Observation) -> None:
        labels = {"service": self.service}
        if "held" not in observation.values:
            return
        metrics.sqlite_write_lock_held.labels(**labels).set(observation.values["held"])
        metrics.sqlite_write_lock_held_seconds.labels(**labels).set(observation.values["held_seconds"])
        metrics.sqlite_wal_size_bytes.labels(**labels).set(observation.values["wal_size_bytes"])
        metrics.sqlite_hot_journal.labels(**labels).set(observation.values["hot_journal"])
        if "database_size_bytes" in observation.values:
            metrics.sqlite_database_size_bytes.labels(**labels).set(observation.values["database_size_bytes"])


def wal_summary(observation: Observation | None) -> dict[str, object] | None:
    """`status`'s view of the WAL from a lock observation: its size, the database's, and the processes whose read
    transaction pins it (from /proc/locks); None when the database is not in WAL mode or was not seen."""
    if observation is None or observation.detail.get("journal_mode") != "wal":
        return None
    return {
        "size_bytes": observation.values.get("wal_size_bytes", 0.0),
        "database_bytes": observation.values.get("database_size_bytes", 0.0),
        "readers": list(observation.detail.get("wal_readers") or ()),
    }


def _writers(locks: list[FileLock], stat: os.stat_result | None, offsets: tuple[int, ...]) -> set[int | None]:
    return _holders(locks, stat, offsets, "WRITE")


def _holders(
    locks: list[FileLock], stat: os.stat_result | None, offsets: tuple[int, ...], mode: str
) -> set[int | None]:
    if stat is None:
        return set()
    device, inode = file_id(stat)
    return {
        lock.pid
        for lock in locks
        if lock.inode == inode
        and lock.device == device
        and lock.mode == mode
        and any(lock.covers(offset) for offset in offsets)
    }


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _journal_signature(journal: Path) -> tuple[int, int] | None:
    """(inode, size) of a rollback journal whose header is valid (a live or hot journal), else None. Reading the
    journal is safe: SQLite locks only the database file, never its journal."""
    try:
        with journal.open("rb") as handle:
            if handle.read(len(JOURNAL_MAGIC)) != JOURNAL_MAGIC:
                return None
            stat = os.fstat(handle.fileno())
    except OSError:
        return None
    return stat.st_ino, stat.st_size


def _process_name(pid: int) -> str | None:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return None
