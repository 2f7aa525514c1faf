"""`rollbackd run` as systemd would start it: a real child process, its environment (NOTIFY_SOCKET,
WATCHDOG_USEC) given at exec, watching real example-service instances; plus the config text those runs use and
readers for what the daemon exposes (/metrics, the status socket, the CLI).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rollbackd.runtime.status_socket import StatusSocketError, query_status
from tests.probes.example_app import VbrpgApp
from tests.support.vbrpg_service import VBRPG_EXAMPLE, free_port, kill_detached, run_cli

T = TypeVar("T")
PYTHON = sys.executable
# Set by systemd for its own children: a test run started from a systemd session must not pass them on, or the
# daemon would log to the journal or ping a watchdog that is not the test's.
SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID", "JOURNAL_STREAM", "LISTEN_FDS")


def wait_for(
    check: Callable[[], T | None],
    what: str,
    timeout: float = 60.0,
    step: float = 0.05,
    log: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds, with
    ``log()`` as it is then (the daemon's log tail, say)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f"\n{log()}" if log else ""))
        time.sleep(step)


# ---- what the daemon exposes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Samples:
    """One /metrics scrape, parsed with prometheus_client's own parser."""

    values: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def parse(cls, text: str) -> Samples:
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return cls(values)

    def get(self, name: str, **labels: str) -> float | None:
        return self.values.get((name, frozenset(labels.items())))

    def labelsets(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for (sample, labels) in self.values if sample == name]

    def services(self) -> set[str]:
        """Every ``service`` label value in the scrape."""
        return {value for (_, labels) in self.values for key, value in labels if key == "service"}

    def probes_reported(self, service: str) -> set[str]:
        return {
            labels["probe"]
            for labels in self.labelsets("rollbackd_probe_last_run_timestamp_seconds")
            if labels.get("service") == service
        }


def scrape(url: str) -> Samples | None:
    try:
        response = httpx.get(url, trust_env=False, timeout=5)
    except httpx.TransportError:
        return None
    return Samples.parse(response.text) if response.status_code == 200 else None


# ---- config text --------------------------------------------------------------------------------------------


def daemon_toml(state_dir: Path, metrics_port: int, *, shutdown_timeout: str = "20s") -> str:
    return f"""
[daemon]
state_dir = "{state_dir}"
metrics_listen = "127.0.0.1:{metrics_port}"
shutdown_timeout = "{shutdown_timeout}"
log_level = "info"
"""


def service_toml(
    app: VbrpgApp,
    name: str,
    *,
    every: str = "200ms",
    health_every: str | None = None,
    health_timeout: str = "2s",
    integrity_every: str | None = None,
    latency_path: str | None = None,
    control: bool = False,
    extra: str = "",
) -> str:
    """One ``[[service]]`` for ``app`` with every probe on ``every``; ``control``: rollbackd may start and stop
    the service (the `command` kind, the way the e2e stack does it: `serve --detach` / `stop --pidfile`)."""
    latency = f'paths = ["{latency_path}"]' if latency_path else "enabled = false"
    control_text = ""
    if control:
        start = json.dumps([str(part) for part in DetachedService(app).start_argv()])
        stop = json.dumps([*VBRPG_EXAMPLE, "stop", "--pidfile", str(app.pidfile)])
        control_text = f"""
[service.control]
kind = "command"
start = {start}
stop = {stop}
timeout = "60s"
"""
    return f"""
[[service]]
name = "{name}"
workdir = "{app.root}"
database = "{app.database}"
base_url = "{app.base_url}"

[service.alembic]
ini = "{app.app_dir / "alembic.ini"}"
{control_text}
[service.backups]
every = "1h"
drill_every = "0s"

[service.probes.health]
every = "{health_every or every}"
timeout = "{health_timeout}"

[service.probes.latency]
{latency}
every = "{every}"

[service.probes.sqlite_lock]
every = "{every}"

[service.probes.integrity]
quick_every = "{integrity_every or every}"
full_every = "1h"

[service.probes.schema]
every = "{every}"

[service.probes.rows]
every = "{every}"

[service.probes.process]
every = "{every}"
pidfile = "{app.pidfile}"
{extra}
"""


# ---- the example service, started the way rollbackd's `command` control starts it -------------------------


@dataclass
class DetachedService:
    """`vbrpg-example serve --detach` for ``app`` on a port fixed now, so the config can name it."""

    app: VbrpgApp

    def __post_init__(self) -> None:
        if self.app.port == 9:
            self.app.port = free_port()

    def start_argv(self) -> list[object]:
        return [*VBRPG_EXAMPLE, "serve", "--db", self.app.database, "--app-dir", self.app.app_dir, "--port",
                self.app.port, "--chaos", "--detach", "--pidfile", self.app.pidfile,
                "--log-file", self.app.root / "run" / "service.log"]  # fmt: skip

    def start(self) -> None:
        self.app.pidfile.parent.mkdir(parents=True, exist_ok=True)
        result = run_cli(*self.start_argv()[3:])
        assert result.returncode == 0, result.stdout + result.stderr

    def stop(self) -> None:
        run_cli("stop", "--pidfile", self.app.pidfile)
        kill_detached(self.app.pidfile)


# ---- the daemon ---------------------------------------------------------------------------------------------


@dataclass
class DaemonProcess:
    process: subprocess.Popen[bytes]
    config: Path
    state_dir: Path
    metrics_url: str
    log: Path
    env: Mapping[str, str] = field(default_factory=dict)

    def scrape(self) -> Samples | None:
        return scrape(self.metrics_url)

    def status(self) -> dict[str, Any] | None:
        """The status document straight from the daemon's socket (what `rollbackd status --json` prints)."""
        try:
            return query_status(self.state_dir / "rollbackd.sock")
        except StatusSocketError:
            return None

    def cli(self, *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`rollbackd --config CONFIG ARGUMENTS...`, as an operator on the same host would run it."""
        return subprocess.run(
            [PYTHON, "-m", "rollbackd", "--config", str(self.config), *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def status_json(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode in (0, 1), result.stdout + result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def signal(self, signum: int) -> None:
        """To the daemon alone (systemd's KillMode=mixed sends SIGTERM to the main process only)."""
        self.process.send_signal(signum)

    def stop(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def assert_running(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"rollbackd run exited with {self.process.returncode}:\n{self.log_tail()}")


@contextlib.contextmanager
def rollbackd_run(config: Path, state_dir: Path, metrics_port: int, **env: str) -> Iterator[DaemonProcess]:
    """`rollbackd --config CONFIG run` in its own session with ``env`` added to a clean environment; its log
    beside the config. Killed (the whole group) if it still runs when the block ends."""
    environ = {key: value for key, value in os.environ.items() if key not in SYSTEMD_VARIABLES}
    environ.update(env)
    log = config.parent / f"{config.stem}.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [PYTHON, "-m", "rollbackd", "--config", str(config), "run"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=environ,
        )
    try:
        yield DaemonProcess(process, config, state_dir, f"http://127.0.0.1:{metrics_port}/metrics", log, env)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait()
