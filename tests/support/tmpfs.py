"""A small tmpfs mounted for one test (root only): a disk that fills, or a read-only mount as ProtectSystem=strict
makes one. Skips the test, saying what goes untested, where the mount is refused."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def mounted_tmpfs(mount_point: Path, options: str, untested: str) -> Iterator[Path]:
    """``mount -t tmpfs -o OPTIONS`` on a new ``mount_point``, unmounted afterwards."""
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}) here ({result.stderr.strip()}); {untested}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
