"""A CLI run with its stderr on a real pseudo-terminal: what a person at a terminal sees (live progress lines)."""

from __future__ import annotations

import os
import pty
import subprocess
from collections.abc import Sequence


def stderr_on_a_terminal(argv: Sequence[str], timeout: float = 60) -> tuple[int, bytes]:
    """Run ``argv`` with stderr on a pty (stdout and stdin away); return its exit code and all it wrote there."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    return process.wait(timeout=timeout), output
