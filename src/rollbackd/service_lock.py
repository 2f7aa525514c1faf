"""One lock per service, shared by the daemon and the CLI, so two actors never change a service at once.

A ``flock`` on ``state_dir/locks/<service>.lock`` (never on the database file: closing any fd of the database
would drop SQLite's POSIX locks in this process). The holder writes who it is and why, so the one refused can
say "restore held by pid 4711 (rollbackd migrate)". The kernel drops the lock when the holder dies.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

MIGRATE_LOCK_PURPOSE = "rollbackd migrate"  # the daemon's policy waits while a holder's purpose starts with this
# inspect() takes a shared flock for a moment (two syscalls, but a thread may lose the GIL between them): a refusal
# that short is no holder. acquire() keeps trying this long even with timeout=0 before it names one.
INSPECT_GRACE = 0.05


class ServiceBusy(Exception):
    """Another process (or another task of this one) is acting on the service."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a service's lock (``held``), or held it last: what the holder wrote when it took it."""

    held: bool
    pid: int | None
    purpose: str
    since: float | None


class ServiceLock:
    def __init__(self, state_dir: Path, service: str, purpose: str) -> None:
        self.path = state_dir / "locks" / f"{service}.lock"
        self.service = service
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self, timeout: float = 0.0, poll: float = 0.2) -> None:
        """Take the lock, waiting up to ``timeout`` seconds. Raise ServiceBusy naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        started = time.monotonic()
        deadline = started + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline and now - started >= INSPECT_GRACE:
                    holder = self.holder()
                    os.close(fd)
                    raise ServiceBusy(f"service {self.service!r} is busy: {holder}") from None
                time.sleep(poll if now < deadline else INSPECT_GRACE / 10)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "purpose": self.purpose, "since": time.time()}).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> str:
        """Describe the current holder from what it wrote, for error messages."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "held by another process"
        return f"{info.get('purpose', 'an action')} held by pid {info.get('pid', '?')}"

    def inspect(self) -> LockHolder | None:
        """Return who holds the lock now (``held``) or held it last, without waiting; None if it was never taken.

        Probes with a shared non-blocking flock on a descriptor of its own: flock locks belong to the open file
        description, so this never disturbs a holder, and it sees a holder in this very process too.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                held = False
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                held = True
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        try:
            info = json.loads(raw or b"{}")
        except ValueError:
            info = {}
        if not isinstance(info, dict):
            info = {}
        pid, since = info.get("pid"), info.get("since")
        return LockHolder(
            held,
            pid if isinstance(pid, int) else None,
            str(info.get("purpose", "")),
            float(since) if isinstance(since, int | float) else None,
        )

    def __enter__(self) -> ServiceLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
