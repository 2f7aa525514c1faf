"""Whether a process still runs: how files a dead rollbackd left behind (temp copies, scratch dirs) are told from
those of one still at work."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists (also when it belongs to another user and cannot be signalled)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
