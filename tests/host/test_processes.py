"""Telling a live process from a dead one, as the stale-file cleanups do, with real processes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from rollbackd.backup.snapshot import remove_stale_partials
from rollbackd.host.processes import pid_alive


def test_a_running_process_is_alive_and_a_reaped_one_is_not() -> None:
    assert pid_alive(os.getpid())
    assert pid_alive(1)  # another user's process (or ours in a container) counts as alive
    child = subprocess.Popen(["true"])
    child.wait()
    assert not pid_alive(child.pid)


def test_pid_0_is_not_a_process() -> None:
    """kill(0, 0) signals the caller's own process group and succeeds: the hand-written check said alive."""
    assert not pid_alive(0)


def test_a_temp_file_named_with_pid_0_is_stale_not_kept_forever(tmp_path: Path) -> None:
    stale = tmp_path / ".vbrpg_backup_20250101_000000.db.0.partial"
    live = tmp_path / f".vbrpg_backup_20250101_000000.db.{os.getppid()}.partial"
    for path in (stale, live):
        path.write_bytes(b"half a copy")
    assert remove_stale_partials(tmp_path, "vbrpg") == [stale]
    assert live.exists()
