"""One daemon watching N services on a few healthy example backends: does its own load ever become an incident?

For each N and each interval setting (every probe at 1 s, and the defaults), start the backends once, then
`rollbackd run` watching N services (round-robin over the backends, each with its own backup dir), let it run
``--seconds``, and report the daemon's CPU (share of one core) and RSS, probe runs per second against the
configured rate, the worst loop lag seen on /metrics, inconclusive observations, incidents (goal: 0 at every
count), and which probe kinds' intervals were stretched (and after how many seconds of the run).

    .venv/bin/python bench/overload.py --counts 1 20 35 50 80 --seconds 60

The backends are healthy throughout: every incident is one the daemon's own load made.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.probes.example_app import VbrpgApp  # noqa: E402
from tests.support.detached_service import DetachedService  # noqa: E402
from tests.support.rollbackd_config import daemon_toml  # noqa: E402
from tests.support.rollbackd_config import service_toml as shared_service_toml  # noqa: E402
from tests.support.rollbackd_daemon import Samples, scrape, start_rollbackd  # noqa: E402
from tests.support.vbrpg_service import free_port  # noqa: E402

from rollbackd.config.model import load_config  # noqa: E402
from rollbackd.runtime.retention import probe_intervals  # noqa: E402

PROBES = ("health", "latency", "sqlite_lock", "integrity", "schema", "rows", "process")


def service_toml(app: VbrpgApp, name: str, room: str, backups: Path, every: str | None) -> str:
    """One service on ``app``; every probe at ``every``, or the config's defaults when None."""
    return shared_service_toml(
        app, name, every=every, health_timeout=None, full_every=None, latency_path=f"/api/rooms/{room}",
        backups_dir=backups, extra="\n[service.deploy]\nwatch = false\n",
    )  # fmt: skip


@dataclass
class Run:
    services: int
    every: str
    seconds: float = 0.0
    startup: float = 0.0
    cpu: float = 0.0
    rss_mib: float = 0.0
    runs_per_second: float = 0.0
    expected_per_second: float = 0.0
    lag_max: float = 0.0
    inconclusive: float = 0.0
    incidents: int = 0
    actions: float = 0.0
    overloaded_seconds: float = 0.0
    independent_p95: float = 0.0  # /health on the backends from outside the daemon
    independent_failures: int = 0
    stretched: dict[str, float] = field(default_factory=dict)  # probe kind -> seconds into the run

    def row(self) -> str:
        stretched = ", ".join(f"{probe} @{at:.0f}s" for probe, at in self.stretched.items()) or "none"
        ratio = self.runs_per_second / self.expected_per_second if self.expected_per_second else 0.0
        return (
            f"| {self.services} | {self.every} | {self.startup:.0f} s | {self.cpu * 100:.1f} % | "
            f"{self.rss_mib:.0f} MiB | "
            f"{self.runs_per_second:.1f} / {self.expected_per_second:.1f} ({ratio:.2f}) | {self.lag_max:.3f} s | "
            f"{self.overloaded_seconds:.0f} s | {self.inconclusive:.0f} | {self.incidents} | {self.actions:.0f} | "
            f"{stretched} | {self.independent_p95 * 1000:.0f} ms / {self.independent_failures} |"
        )


HEADER = (
    "| services | intervals | start-up | daemon CPU | RSS | probe runs/s achieved / configured (ratio) | "
    "loop lag max | "
    "overloaded | inconclusive | incidents | actions | stretched (probe @ seconds into the run) | "
    "independent /health p95 / failures |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def total(samples: Samples, name: str) -> float:
    return sum(samples.get(name, **labels) or 0.0 for labels in samples.labelsets(name))


def configured_intervals(config: Path) -> dict[str, float]:
    """Each probe kind's configured interval (the same for every service here), read by rollbackd's own loader."""
    return probe_intervals(load_config(config).service[0])


class IndependentProbe(threading.Thread):
    """GET /health on every backend once a second from outside the daemon: was the service itself slow?"""

    def __init__(self, urls: list[str], timeout: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.urls, self.timeout = urls, timeout
        self.latencies: list[float] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(trust_env=False, timeout=self.timeout) as client:
            while not self.stop.wait(1.0):
                for url in self.urls:
                    started = time.perf_counter()
                    try:
                        ok = client.get(url).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    self.latencies.append(time.perf_counter() - started)
                    self.failures += 0 if ok else 1

    def p95(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, int(len(ordered) * 0.95) - 1)] if ordered else 0.0


def _services(samples: Samples) -> set[str]:
    return {labels["service"] for labels in samples.labelsets("rollbackd_probe_interval_seconds")}


def incidents(state: Path) -> int:
    database = state / "rollbackd.db"
    if not database.exists():
        return 0
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return int(connection.execute("SELECT count(*) FROM incidents").fetchone()[0])


@contextlib.contextmanager
def backends(root: Path, count: int) -> Iterator[list[tuple[VbrpgApp, str]]]:
    apps = [VbrpgApp(root / f"backend{index}").create() for index in range(count)]
    services = [DetachedService.for_app(app) for app in apps]
    try:
        for service in services:
            service.start()
        yield [(app, app.create_room()) for app in apps]
    finally:
        for service in services:
            service.stop()


def measure(root: Path, apps: list[tuple[VbrpgApp, str]], count: int, every: str | None, seconds: float) -> Run:
    run_dir = Path(tempfile.mkdtemp(prefix=f"n{count}-", dir=root))
    state = run_dir / "state"
    port = free_port()
    config = run_dir / "rollbackd.toml"
    text = daemon_toml(state, port, log_level=None)
    for index in range(count):
        app, room = apps[index % len(apps)]
        text += service_toml(app, f"svc{index:03d}", room, run_dir / "backups" / f"svc{index:03d}", every)
    config.write_text(text)
    url = f"http://127.0.0.1:{port}/metrics"
    result = Run(count, every or "default")
    rollbackd = start_rollbackd(config, state, port)
    process = rollbackd.process
    try:
        daemon = psutil.Process(process.pid)
        first = None
        launched = time.monotonic()
        deadline = launched + 600
        while first is None or len(_services(first)) < count:  # every service started
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"rollbackd did not come up; see {run_dir / 'rollbackd.log'}")
            time.sleep(1)
            first = scrape(url)
        result.startup = time.monotonic() - launched
        intervals = configured_intervals(config)
        result.expected_per_second = count * sum(1.0 / every for every in intervals.values())
        independent = IndependentProbe([f"{app.base_url}/health" for app, _ in apps])
        independent.start()
        started = time.monotonic()
        cpu_start = sum(daemon.cpu_times()[:2])
        runs_start = total(first, "rollbackd_probe_duration_seconds_count")
        last = first
        while (elapsed := time.monotonic() - started) < seconds:
            time.sleep(1)
            samples = scrape(url)
            if samples is None:
                continue
            last = samples
            result.lag_max = max(result.lag_max, samples.get("rollbackd_loop_lag_seconds") or 0.0)
            if samples.get("rollbackd_overloaded"):
                result.overloaded_seconds += 1
            for labels in samples.labelsets("rollbackd_probe_interval_seconds"):
                value = samples.get("rollbackd_probe_interval_seconds", **labels) or 0.0
                if value > intervals[labels["probe"]] and labels["probe"] not in result.stretched:
                    result.stretched[labels["probe"]] = elapsed
            result.rss_mib = max(result.rss_mib, daemon.memory_info().rss / 2**20)
        result.seconds = time.monotonic() - started
        result.cpu = (sum(daemon.cpu_times()[:2]) - cpu_start) / result.seconds
        result.runs_per_second = (total(last, "rollbackd_probe_duration_seconds_count") - runs_start) / result.seconds
        result.inconclusive = total(last, "rollbackd_probe_inconclusive_total")
        result.actions = total(last, "rollbackd_recovery_actions_total")
        independent.stop.set()
        independent.join(timeout=10)
        result.independent_p95, result.independent_failures = independent.p95(), independent.failures
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        rollbackd.close()  # SIGKILL for what is left of its group
    result.incidents = incidents(state)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 20, 35, 50, 80])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per run (after start-up)")
    parser.add_argument("--backends", type=int, default=3, help="healthy example services the N services share")
    parser.add_argument("--intervals", nargs="+", default=["1s", "default"], help='"1s" (every probe) or "default"')
    args = parser.parse_args()
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="rollbackd-overload-") as directory:
        root = Path(directory)
        with backends(root, args.backends) as apps:
            for every in args.intervals:
                for count in args.counts:
                    print(
                        measure(root, apps, count, None if every == "default" else every, args.seconds).row(),
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
