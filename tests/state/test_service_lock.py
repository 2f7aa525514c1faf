"""One lock per service between the daemon and the CLI: a real second process is refused and told who holds it."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rollbackd.state.service_lock import ServiceBusy, ServiceLock

HOLDER = """
import sys, time
from pathlib import Path
from rollbackd.state.service_lock import ServiceLock
lock = ServiceLock(Path(sys.argv[1]), "vbrpg", "rollbackd migrate")
lock.acquire()
print("held", flush=True)
sys.stdin.readline()
"""


def test_second_process_is_refused_and_told_the_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ServiceBusy, match=rf"rollbackd migrate held by pid {holder.pid}"):
            ServiceLock(tmp_path, "vbrpg", "restore").acquire(timeout=0.5)
        # Another service is independent.
        with ServiceLock(tmp_path, "other", "restore"):
            pass
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()
    # The kernel released it when the holder exited.
    with ServiceLock(tmp_path, "vbrpg", "restore") as lock:
        assert "restore" in lock.holder()


def test_same_process_second_acquire_is_refused(tmp_path: Path) -> None:
    with ServiceLock(tmp_path, "vbrpg", "daemon action"), pytest.raises(ServiceBusy):
        ServiceLock(tmp_path, "vbrpg", "cli").acquire()
    assert (tmp_path / "locks" / "vbrpg.lock").stat().st_mode & 0o777 == 0o600


def test_an_inspection_in_progress_is_not_a_holder(tmp_path: Path) -> None:
    """inspect() probes with a shared flock for a moment; the daemon's policy inspects on every observation while
    its backup scheduler takes the lock with timeout=0, which must not then report the service busy."""
    lock = ServiceLock(tmp_path, "vbrpg", "backup (scheduled)")
    with lock:
        pass  # the lock file exists, naming its last holder
    # The shared probe inspect() takes (its own descriptor), released 10 ms into the acquire below.
    probe = os.open(lock.path, os.O_RDONLY | os.O_CLOEXEC)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)

    def end_probe() -> None:
        fcntl.flock(probe, fcntl.LOCK_UN)
        os.close(probe)

    timer = threading.Timer(0.01, end_probe)
    timer.start()
    try:
        lock.acquire(timeout=0)
    finally:
        timer.join()
    lock.release()
