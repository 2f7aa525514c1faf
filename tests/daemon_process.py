"""`rollbackd run` as a real subprocess watching the example service, with every probe on a short interval."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from rollbackd.probes import PROBE_NAMES
from tests.probes.example_app import VbrpgApp

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 60.0, step: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def write_daemon_config(path: Path, app: VbrpgApp, metrics_port: int, room_code: str) -> Path:
    path.write_text(
        f"""
[daemon]
state_dir = "{path.parent / "state"}"
metrics_listen = "127.0.0.1:{metrics_port}"
shutdown_timeout = "10s"

[[service]]
name = "vbrpg"
workdir = "{app.root}"
database = "{app.database}"
base_url = "{app.base_url}"

[service.alembic]
ini = "{app.app_dir / "alembic.ini"}"

[service.probes.health]
every = "200ms"
timeout = "1s"

[service.probes.latency]
paths = ["/api/rooms/{room_code}"]
every = "200ms"

[service.probes.sqlite_lock]
every = "200ms"

[service.probes.integrity]
quick_every = "500ms"

[service.probes.schema]
every = "200ms"

[service.probes.rows]
every = "200ms"

[service.probes.process]
every = "200ms"
pidfile = "{app.pidfile}"
"""
    )
    return path


@dataclass
class RunningDaemon:
    process: subprocess.Popen[bytes]
    metrics_url: str
    log: Path

    def scrape(self) -> str | None:
        try:
            response = httpx.get(self.metrics_url, trust_env=False, timeout=5)
        except httpx.TransportError:
            return None
        return response.text if response.status_code == 200 else None

    def scrape_with_every_probe(self) -> str:
        def every_probe_reported() -> str | None:
            text = self.scrape()
            if text and all(f'rollbackd_probe_success{{probe="{name}"' in text for name in PROBE_NAMES):
                return text
            return None

        return wait_for(every_probe_reported, f"rollbackd_probe_success for {PROBE_NAMES}; log:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@contextmanager
def running(config: Path) -> Iterator[RunningDaemon]:
    """`rollbackd --config CONFIG run` in its own process group, its log beside the config; killed if still
    running when the block ends. The metrics URL is read from the config."""
    port = int(config.read_text().split('metrics_listen = "127.0.0.1:', 1)[1].split('"', 1)[0])
    log = config.parent / "rollbackd.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "rollbackd", "--config", str(config), "run"],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield RunningDaemon(process, f"http://127.0.0.1:{port}/metrics", log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
