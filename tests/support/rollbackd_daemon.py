"""`rollbackd run` as systemd would start it: a real child process in its own session, its environment
(NOTIFY_SOCKET, WATCHDOG_USEC) given at exec, waited for as systemd waits for a Type=notify unit (READY=1 on a
real notify socket), and read through what it exposes (/metrics, the status socket, the CLI).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rollbackd.probes import PROBE_NAMES
from rollbackd.runtime.status_client import StatusSocketError, query_status
from tests.support.notify_listener import NotifyListener, first_index

T = TypeVar("T")
PYTHON = sys.executable
# Set by systemd for its own children: a test run started from a systemd session must not pass them on, or the
# daemon would log to the journal or ping a watchdog that is not the test's.
SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID", "JOURNAL_STREAM", "LISTEN_FDS")
READY_TIMEOUT_SECONDS = 60.0
FIRST_STEP_SECONDS = 0.05
LONGEST_STEP_SECONDS = 0.25


def wait_for(
    check: Callable[[], T | None],
    what: str,
    timeout: float = 60.0,
    step: float | None = None,
    log: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds, with
    ``log()`` as it is then (the daemon's log tail, say). Without ``step`` the pause grows from 50 ms to 250 ms,
    so a quick answer comes quickly and a check that runs the CLI does not keep a core busy."""
    deadline = time.monotonic() + timeout
    pause = step if step is not None else FIRST_STEP_SECONDS
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f"\n{log()}" if log else ""))
        time.sleep(pause)
        if step is None:
            pause = min(pause * 2, LONGEST_STEP_SECONDS)


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


def scrape_text(url: str | None) -> str | None:
    """The exposition at ``url`` as served, or None while nothing answers 200 there."""
    if url is None:
        return None
    try:
        response = httpx.get(url, trust_env=False, timeout=5)
    except httpx.TransportError:
        return None
    return response.text if response.status_code == 200 else None


def scrape(url: str | None) -> Samples | None:
    text = scrape_text(url)
    return Samples.parse(text) if text is not None else None


def rollbackd_cli(config: Path, *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`rollbackd --config CONFIG ARGUMENTS...`, as an operator on the same host would run it."""
    return subprocess.run(
        [PYTHON, "-m", "rollbackd", "--config", str(config), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


# ---- the daemon ---------------------------------------------------------------------------------------------


@dataclass
class DaemonProcess:
    process: subprocess.Popen[bytes]
    config: Path
    state_dir: Path
    metrics_url: str | None
    log: Path
    env: Mapping[str, str] = field(default_factory=dict)
    notify: NotifyListener | None = None  # the harness's own, when the test gave no NOTIFY_SOCKET

    @property
    def pid(self) -> int:
        return self.process.pid

    def scrape(self) -> Samples | None:
        return scrape(self.metrics_url)

    def scrape_text(self) -> str | None:
        return scrape_text(self.metrics_url)

    def scrape_with_every_probe(self) -> str:
        """The exposition once it has a rollbackd_probe_success series for every probe."""

        def every_probe_reported() -> str | None:
            text = self.scrape_text()
            if text and all(f'rollbackd_probe_success{{probe="{name}"' in text for name in PROBE_NAMES):
                return text
            return None

        return wait_for(every_probe_reported, f"rollbackd_probe_success for {PROBE_NAMES}", log=self.log_tail)

    def status(self) -> dict[str, Any] | None:
        """The status document straight from the daemon's socket (what `rollbackd status --json` prints)."""
        try:
            return query_status(self.state_dir / "rollbackd.sock")
        except StatusSocketError:
            return None

    def cli(self, *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return rollbackd_cli(self.config, *arguments, timeout=timeout)

    def status_json(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode in (0, 1), result.stdout + result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def wait_ready(self, *, backups_of: Iterable[str] = (), timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait for READY=1 (on the harness's notify socket; on the status socket when the test brought its own
        NOTIFY_SOCKET), then for a first backup of each service in ``backups_of``. Fail with the log at once if
        the daemon exits meanwhile."""
        deadline = time.monotonic() + timeout
        if self.notify is not None:
            while first_index(self.notify.datagrams, "READY", "1") is None:
                self.assert_running()
                if time.monotonic() > deadline:
                    raise AssertionError(f"no READY=1 after {timeout}s:\n{self.log_tail()}")
                # Slices of a second: the listener wakes at once on the datagram, the slice only bounds how
                # late a daemon that died is noticed.
                with contextlib.suppress(AssertionError):
                    self.notify.wait_for(lambda seen: first_index(seen, "READY", "1") is not None, "READY=1", 1.0)
        else:
            wait_for(lambda: self._running_and_ready(), "READY", timeout, log=self.log_tail)
        names = tuple(backups_of)
        if names:
            wait_for(
                lambda: self._running_and_backed_up(names),
                f"a first backup of {', '.join(names)}",
                max(1.0, deadline - time.monotonic()),
                log=self.log_tail,
            )

    def _running_and_ready(self) -> bool:
        self.assert_running()
        return bool((self.status() or {}).get("daemon", {}).get("ready"))

    def _running_and_backed_up(self, names: tuple[str, ...]) -> bool:
        self.assert_running()
        services = (self.status() or {}).get("services", {})
        return all(services.get(name, {}).get("last_backup") for name in names)

    def signal(self, signum: int) -> None:
        """To the daemon alone (systemd's KillMode=mixed sends SIGTERM to the main process only)."""
        self.process.send_signal(signum)

    send_signal = signal

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def terminate_group(self, timeout: float = 30) -> None:
        """SIGTERM the whole group (the daemon and what it started), SIGKILL it if it is not gone in time."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        self.close()

    def close(self) -> None:
        """SIGKILL the group if the daemon still runs; reap it; unbind the harness's notify socket."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self.notify is not None:
            self.notify.close()
            self.notify = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def assert_no_traceback(self) -> None:
        """Fail with the first traceback in the daemon's log and what led to it, so a rare one can be read."""
        text = self.log_text()
        if "Traceback" in text:
            at = text.index("Traceback")
            raise AssertionError(f"a traceback in the daemon's log:\n{text[max(0, at - 1500) : at + 3000]}")

    def assert_running(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"rollbackd run exited with {self.process.returncode}:\n{self.log_tail()}")


def start_rollbackd(
    config: Path, state_dir: Path | None = None, metrics_port: int | None = None, **env: str
) -> DaemonProcess:
    """`rollbackd --config CONFIG run` in its own session with ``env`` added to a clean environment; its log
    beside the config. ``state_dir`` and the metrics port default to the config's. Without a NOTIFY_SOCKET in
    ``env`` the harness binds one of its own (an abstract socket), so wait_ready() waits for READY=1."""
    daemon_table = tomllib.loads(config.read_text()).get("daemon", {})
    if state_dir is None:
        state_dir = Path(daemon_table["state_dir"])
    if metrics_port is None and daemon_table.get("metrics_listen"):
        metrics_port = int(str(daemon_table["metrics_listen"]).rsplit(":", 1)[1])
    notify = None
    if "NOTIFY_SOCKET" not in env:
        notify = NotifyListener("abstract", config.parent)
        env = {**env, "NOTIFY_SOCKET": notify.address}
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
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None
    return DaemonProcess(process, config, state_dir, metrics_url, log, env, notify)


@contextlib.contextmanager
def rollbackd_run(
    config: Path, state_dir: Path | None = None, metrics_port: int | None = None, **env: str
) -> Iterator[DaemonProcess]:
    """start_rollbackd() for the block; the whole group killed if it still runs when the block ends."""
    daemon = start_rollbackd(config, state_dir, metrics_port, **env)
    try:
        yield daemon
    finally:
        daemon.close()
