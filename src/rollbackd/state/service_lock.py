"""One lock per service, shared by the daemon and the CLI, so two actors never change a service at once.

A ``flock`` on ``state_dir/locks/<service>.lock`` (never on the database file: closing any fd of the database
would drop SQLite's POSIX locks in this process). The holder writes who it is and why, so the one refused can
say "restore held by pid 4711 (rollbackd migrate)". The kernel drops the lock when the holder dies.

A holder that changes the database (migrate, restore, a downgrade) says so, and stamps the file when it lets go:
the daemon stands aside while another process does that, and knows a revision change it then sees was no deploy.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from rollbackd.host.private_dirs import make_private_dir

MIGRATE_LOCK_PURPOSE = "rollbackd migrate"  # how a migrate names itself to the one it keeps waiting
# inspect() takes a shared flock for a moment (two syscalls, but a thread may lose the GIL between them): a refusal
# that short is no holder. acquire() keeps trying this long even with timeout=0 before it names one.
INSPECT_GRACE = 0.05
# look() trusts a stat of the lock file to stand for its text only once the file's mtime is this much older than the
# read: a rewrite within one timestamp tick (a few ms; 1-2 s on coarse filesystems) can leave mtime and size as they
# were ("racy git"), so a file written just before a read is read again at the next look.
RACY_MTIME = 2.0


class ServiceBusy(Exception):
    """Another process (or another task of this one) is acting on the service."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a service's lock (``held``), or held it last: what the holder wrote when it took it."""

    held: bool
    pid: int | None
    purpose: str
    since: float | None
    changes_database: bool = False
    released: float | None = None  # when the last holder let go (None: held, or it died holding it)


@dataclass(frozen=True)
class LockLook:
    """One look at a service's lock: who holds it (None: never taken), and the lock file's identity then
    (device, inode, mtime_ns, size) when the next look may take an unchanged stat for unchanged text."""

    holder: LockHolder | None
    file_key: tuple[int, int, int, int] | None = None


class ServiceLock:
    def __init__(self, state_dir: Path, service: str, purpose: str, *, changes_database: bool = False) -> None:
        self.path = state_dir / "locks" / f"{service}.lock"
        self.service = service
        self.purpose = purpose
        self.changes_database = changes_database
        self._fd: int | None = None
        self._since = 0.0
        # Who held the lock last before this acquire() took it (from the text it left), None when nobody had.
        self.previous: LockHolder | None = None

    def acquire(self, timeout: float = 0.0, poll: float = 0.2) -> None:
        """Take the lock, waiting up to ``timeout`` seconds. Raise ServiceBusy naming the holder."""
        make_private_dir(self.path.parent)
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
        self._since = time.time()
        self.previous = _holder(False, _parse(os.pread(fd, 4096, 0))) if os.fstat(fd).st_size else None
        self._write(fd, {})
        self._fd = fd

    def _write(self, fd: int, extra: dict[str, float]) -> None:
        info = {"pid": os.getpid(), "purpose": self.purpose, "since": self._since, **extra}
        if self.changes_database:
            info["changes_database"] = True
        data = json.dumps(info).encode()
        os.pwrite(fd, data, 0)  # then cut what an older, longer text left: a reader never finds the file empty
        os.ftruncate(fd, len(data))

    def release(self) -> None:
        if self._fd is not None:
            # The stamp only helps the daemon tell what changed the database; the unlock must happen regardless.
            with contextlib.suppress(OSError):
                self._write(self._fd, {"released": time.time()})
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> str:
        """Describe the current holder from what it wrote, for error messages."""
        try:
            info = _parse(self.path.read_bytes())
        except OSError:
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
        return _holder(held, _parse(raw))

    def look(self, previous: LockLook | None = None) -> LockLook:
        """inspect(), or ``previous`` again when one stat proves nothing changed: the file is the one ``previous``
        read (same device, inode, mtime, size; its mtime older than RACY_MTIME then) and nobody held it. A holder
        always writes the file when it takes the lock and when it lets go; only a held lock can end unwritten (the
        holder dies, or unlocks after its stamp), so a held one is always inspected again. Raise OSError as
        inspect() does."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return LockLook(None)
        key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if (
            previous is not None
            and previous.file_key == key
            and previous.holder is not None
            and not previous.holder.held
        ):
            return previous
        read_at = time.time_ns()
        holder = self.inspect()
        trusted = read_at - stat.st_mtime_ns >= RACY_MTIME * 1e9
        return LockLook(holder, key if trusted else None)

    def __enter__(self) -> ServiceLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


def _parse(raw: bytes) -> dict[str, object]:
    """The holder's note: the first JSON object in the file (a rewrite may briefly leave an older tail after it)."""
    try:
        info, _end = json.JSONDecoder().raw_decode(raw.decode("utf-8", "replace"))
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _holder(held: bool, info: dict[str, object]) -> LockHolder:
    pid, since, released = info.get("pid"), info.get("since"), info.get("released")
    return LockHolder(
        held,
        pid if isinstance(pid, int) else None,
        str(info.get("purpose", "")),
        float(since) if isinstance(since, int | float) else None,
        info.get("changes_database") is True,
        float(released) if isinstance(released, int | float) and not held else None,
    )
