"""Whether a process still runs: how files a dead rollbackd left behind (temp copies, scratch dirs) are told from
those of one still at work.

psutil's ``pid_exists`` does it: the ``os.kill(pid, 0)`` this module did by hand said "alive" for pid 0, which
kill(2) takes as "my own process group", so a temp file named with pid 0 was kept forever as a live one's.
"""

from __future__ import annotations

import psutil


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists (also when it belongs to another user and cannot be signalled)."""
    return psutil.pid_exists(pid)
