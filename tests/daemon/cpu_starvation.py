"""Starving one process of CPU for real, and giving it back: a CPU-quota cgroup the test creates for that
process alone and removes (cgroup v2 `cpu.max`, or the v1 `cpu` controller), else `taskset` onto one core beside
busy processes the test starts and stops. Nothing else on the machine is throttled."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 1_000_000  # one second: the process runs its share, then waits the rest (lag up to the rest)
BUSY_PROCESSES = 6
GROUP_EMPTY_ATTEMPTS = 50  # moves of the group's processes home before its rmdir gives up (about 10 s)


def _v2_ready() -> bool:
    control = CGROUP_ROOT / "cgroup.subtree_control"
    return control.exists() and "cpu" in control.read_text().split() and os.access(CGROUP_ROOT, os.W_OK)


def _v1_ready() -> bool:
    return (CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").exists() and os.access(CGROUP_ROOT / "cpu", os.W_OK)


def mechanism() -> str | None:
    """'cgroup2', 'cgroup1', 'taskset', or None when this machine offers no way to starve one process."""
    if _v2_ready():
        return "cgroup2"
    if _v1_ready():
        return "cgroup1"
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return "taskset"
    return None


class CpuStarvation:
    """``apply()`` leaves ``pid`` (all its threads) ``share`` of one core; ``lift()`` gives it back."""

    def __init__(self, pid: int, share: float = 0.1) -> None:
        self.pid = pid
        self.share = share
        self.kind = mechanism()
        self.group: Path | None = None
        self.home: Path | None = None
        self.busy: list[subprocess.Popen[bytes]] = []

    def apply(self) -> None:
        if self.kind == "cgroup2":
            self.home = CGROUP_ROOT / _own_cgroup(self.pid, "")
            self.group = CGROUP_ROOT / f"rollbackd-test-{os.getpid()}-{self.pid}"
            self.group.mkdir(exist_ok=True)
            (self.group / "cpu.max").write_text(f"{int(PERIOD_US * self.share)} {PERIOD_US}")
        elif self.kind == "cgroup1":
            self.home = CGROUP_ROOT / "cpu" / _own_cgroup(self.pid, "cpu")
            self.group = CGROUP_ROOT / "cpu" / f"rollbackd-test-{os.getpid()}-{self.pid}"
            self.group.mkdir(exist_ok=True)
            (self.group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.group / "cpu.cfs_quota_us").write_text(str(int(PERIOD_US * self.share)))
        elif self.kind == "taskset":
            subprocess.run(
                ["taskset", "-a", "-p", "-c", "0", str(self.pid)], check=True, capture_output=True, timeout=10
            )
            for _ in range(BUSY_PROCESSES):
                self.busy.append(
                    subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"])  # noqa: S603
                )
            return
        else:
            raise RuntimeError("no way to starve a process of CPU here")
        (self.group / "cgroup.procs").write_text(str(self.pid))

    def lift(self) -> None:
        if self.group is not None and self.home is not None:
            # Every process in the group goes home: the daemon, and a service it started meanwhile (a child
            # inherits its parent's cgroup), which must not stay starved. A process forked while the others move
            # lands in the group after its listing (rmdir then says EBUSY): move again until it is empty.
            for attempt in range(GROUP_EMPTY_ATTEMPTS):
                for pid in (self.group / "cgroup.procs").read_text().split():
                    try:
                        (self.home / "cgroup.procs").write_text(pid)
                    except ProcessLookupError:
                        continue
                try:
                    self.group.rmdir()
                    break
                except OSError as error:
                    if error.errno != errno.EBUSY or attempt == GROUP_EMPTY_ATTEMPTS - 1:
                        raise
                    time.sleep(0.2)  # a process exiting in it leaves the group once it is reaped
            self.group = None
        for process in self.busy:
            process.kill()
            process.wait()
        if self.busy and Path(f"/proc/{self.pid}").exists():
            cores = f"0-{(os.cpu_count() or 1) - 1}"
            subprocess.run(
                ["taskset", "-a", "-p", "-c", cores, str(self.pid)], check=False, capture_output=True, timeout=10
            )
        self.busy = []


def _own_cgroup(pid: int, controller: str) -> str:
    """The process's cgroup path (relative) for ``controller`` ('' for the v2 unified hierarchy)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers.split(",") == [controller] or (controller and controller in controllers.split(",")):
            return path.lstrip("/")
    return ""
