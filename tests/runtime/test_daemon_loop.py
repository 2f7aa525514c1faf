"""The daemon loop: every probe on its own schedule, metrics served, plug-ins isolated, a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from rollbackd.config.model import Config, ServiceConfig, parse_config
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.probes import PROBE_NAMES, Probe, ProbeContext, build_probes
from rollbackd.runtime.daemon import Daemon, DaemonStartupError, on_grid
from tests.probes.example_app import VbrpgApp, serving
from tests.probes.game_database import make_game_database
from tests.support.rollbackd_config import write_daemon_config
from tests.support.rollbackd_daemon import DaemonProcess, rollbackd_run
from tests.support.vbrpg_service import free_port


@pytest.fixture
def served_vbrpg(tmp_path: Path) -> Iterator[VbrpgApp]:
    with serving(VbrpgApp(tmp_path / "vbrpg").create()) as app:
        yield app


@pytest.fixture
def running_daemon(tmp_path: Path, served_vbrpg: VbrpgApp) -> Iterator[DaemonProcess]:
    port = free_port()
    config = write_daemon_config(tmp_path / "rollbackd.toml", served_vbrpg, port, served_vbrpg.create_room())
    with rollbackd_run(config) as daemon:
        yield daemon


def daemon_config(tmp_path: Path, *, metrics_listen: str = "", base_url: str = "http://127.0.0.1:9") -> Config:
    database = tmp_path / "vbrpg.db"
    if not database.exists():
        make_game_database(database)
    # The backup dir (data/backups under the watched workdir) exists before the file watch starts: made by the
    # first backup, its two nested folders race the watchdog library's inotify bookkeeping, whose RuntimeWarning
    # on its own thread fails the test under filterwarnings=error.
    (tmp_path / "data" / "backups").mkdir(parents=True, exist_ok=True, mode=0o700)
    text = f"""
[daemon]
state_dir = "{tmp_path / "state"}"
metrics_listen = "{metrics_listen}"
shutdown_timeout = "5s"

[[service]]
name = "vbrpg"
workdir = "{tmp_path}"
database = "{database}"
base_url = "{base_url}"

[service.probes.health]
every = "100ms"
timeout = "200ms"

[service.probes.sqlite_lock]
every = "100ms"

[service.probes.integrity]
quick_every = "100ms"

[service.probes.schema]
every = "100ms"

[service.probes.rows]
every = "100ms"
"""
    return parse_config(text, tmp_path / "rollbackd.toml")


def run_until(
    daemon: Daemon, enough: int | Callable[[list[Observation]], bool], *, timeout: float = 60.0
) -> list[Observation]:
    """Serve until ``enough`` observations arrived, or until ``enough(seen)`` holds (then ask the daemon to exit,
    as SIGTERM does)."""
    seen: list[Observation] = []

    def listener(observation: Observation) -> None:
        seen.append(observation)
        if (len(seen) >= enough) if isinstance(enough, int) else enough(seen):
            daemon.request_exit()

    daemon.observation_listeners.append(listener)
    asyncio.run(asyncio.wait_for(daemon.serve(), timeout))
    return seen


class ExplodingProbe:
    """A probe with a bug: the daemon must turn it into failed observations and keep the others running."""

    name = "exploding"
    interval = 0.05
    timeout = 1.0

    def __init__(self, service: str) -> None:
        self.service = service

    async def run(self) -> Observation:
        raise RuntimeError("bug in a probe")

    def export(self, metrics: Metrics, observation: Observation) -> None:
        raise RuntimeError("bug in an exporter")


def with_exploding_probe(service: ServiceConfig, context: ProbeContext) -> list[Probe]:
    return [*build_probes(service, context), ExplodingProbe(service.name)]


def test_every_probe_runs_and_is_exported_while_a_broken_one_fails_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    daemon = Daemon(daemon_config(tmp_path), metrics=metrics, probe_builder=with_exploding_probe)
    expected = {"health", "sqlite_lock", "integrity", "schema", "rows", "exploding"}

    def every_probe_twice(seen: list[Observation]) -> bool:
        return all(sum(1 for o in seen if o.probe == probe) >= 2 for probe in expected)

    seen = run_until(daemon, every_probe_twice)
    probes = {observation.probe for observation in seen}
    assert probes == expected
    broken = [observation for observation in seen if observation.probe == "exploding"]
    assert all(observation.reason == "probe_error" for observation in broken)
    assert len(broken) > 1  # it kept being scheduled
    sample = metrics.registry.get_sample_value
    for probe in ("sqlite_lock", "integrity", "rows"):
        assert sample("rollbackd_probe_success", {"service": "vbrpg", "probe": probe}) == 1, probe
    assert sample("rollbackd_probe_success", {"service": "vbrpg", "probe": "health"}) == 0
    assert sample(
        "rollbackd_probe_failures_total", {"service": "vbrpg", "probe": "health", "reason": "connect_refused"}
    )
    assert sample("rollbackd_probe_failures_total", {"service": "vbrpg", "probe": "exploding", "reason": "probe_error"})
    assert sample("rollbackd_table_rows", {"service": "vbrpg", "table": "players"}) == 50
    assert daemon.observations.latest("vbrpg", "rows") is not None
    assert "bug in a probe" in caplog.text


def only_lock_probes(service: ServiceConfig, context: ProbeContext) -> list[Probe]:
    return [probe for probe in build_probes(service, context) if probe.name == "sqlite_lock"]


def test_the_lock_probes_of_all_services_run_on_one_grid_and_share_their_thread_hops(tmp_path: Path) -> None:
    """Services start one after another, so their lock probes start out of phase; after each one's first run
    they run on the one grid of their interval (ALIGNED_PROBES), so a turn of the loop holds every service's run
    and one thread hop serves them all (probes/lock_rounds.py). Each service still gets a run per interval."""
    single = daemon_config(tmp_path)
    services = []
    for index in range(3):
        database = tmp_path / f"vbrpg-{index}.db"
        make_game_database(database)
        services.append(replace(single.service[0], name=f"vbrpg-{index}", database=database))
    config = replace(single, service=services)
    daemon = Daemon(config, metrics=Metrics(), probe_builder=only_lock_probes)

    def eight_runs_each(seen: list[Observation]) -> bool:
        return all(sum(1 for o in seen if o.service == service.name) >= 8 for service in services)

    seen = run_until(daemon, eight_runs_each)
    runs = sum(1 for observation in seen if observation.probe == "sqlite_lock")
    assert {observation.service for observation in seen} == {service.name for service in services}
    assert all(observation.ok for observation in seen)
    # Apart: one hop per run (24 or more). On one grid: the first runs apart, then one hop per turn for three.
    assert daemon.lock_rounds.hops <= runs // 2, (daemon.lock_rounds.hops, runs)


def test_the_grid_puts_every_phase_on_the_same_instants_and_never_waits_longer_than_the_interval() -> None:
    def schedule(start: float, steps: list[float]) -> list[float]:
        instants = [start]
        for step in steps:
            instants.append(on_grid(instants[-1] + step, step))
        return instants

    for step in (0.1, 1.0, 5.0):
        steps = [step] * 6
        schedules = [schedule(1000.0 + phase * step, steps) for phase in (0.0, 0.13, 0.49, 0.51, 0.999)]
        assert all(instants[1:] == schedules[0][1:] for instants in schedules)  # equal floats: due in one turn
        for instants in schedules:
            assert 0 < instants[1] - instants[0] <= step + 1e-9
            assert all(abs(later - earlier - step) < 1e-9 for earlier, later in itertools.pairwise(instants[1:]))
    # Stretched 4× under overload, and given back: no gap longer than the interval then in force.
    stretched = schedule(1000.3, [1.0, 1.0, 4.0, 4.0, 1.0, 1.0])
    gaps = [later - earlier for earlier, later in itertools.pairwise(stretched)]
    assert all(0 < gap <= limit + 1e-9 for gap, limit in zip(gaps, [1.0, 1.0, 4.0, 4.0, 1.0, 1.0], strict=True))


def test_a_failing_listener_is_logged_and_the_others_still_hear_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = Daemon(daemon_config(tmp_path))
    calls = []

    def broken(observation: Observation) -> None:
        raise ValueError("listener bug")

    async def async_listener(observation: Observation) -> None:
        calls.append(observation.probe)

    daemon.observation_listeners.extend([broken, async_listener])
    seen = run_until(daemon, 20)
    assert len(calls) >= len(seen) - 1  # the last one may still be in flight at exit
    assert "listener bug" in caplog.text


def test_registered_task_runs_and_is_restarted_after_a_crash(tmp_path: Path) -> None:
    daemon = Daemon(daemon_config(tmp_path), task_restart_delay=0.01)
    starts = []

    async def backup_schedule() -> None:
        starts.append(len(starts))
        if len(starts) < 3:
            raise RuntimeError("crashed")
        daemon.request_exit()
        await asyncio.Event().wait()  # runs until shutdown cancels it

    daemon.add_task_factory("backup schedule", backup_schedule)
    asyncio.run(asyncio.wait_for(daemon.serve(), 60))
    assert starts == [0, 1, 2]


def test_metrics_are_served_on_the_configured_loopback_address(tmp_path: Path) -> None:
    port = free_port()
    daemon = Daemon(daemon_config(tmp_path, metrics_listen=f"127.0.0.1:{port}"))
    bodies = []

    async def scrape(observation: Observation) -> None:
        if observation.probe == "rows" and not bodies:
            async with httpx.AsyncClient(trust_env=False) as client:
                bodies.append((await client.get(f"http://127.0.0.1:{port}/metrics")).text)
            daemon.request_exit()

    daemon.observation_listeners.append(scrape)
    asyncio.run(asyncio.wait_for(daemon.serve(), 60))
    assert daemon.metrics_server_address == ("127.0.0.1", port)
    assert 'rollbackd_probe_success{probe="rows",service="vbrpg"} 1.0' in bodies[0]
    with pytest.raises(httpx.ConnectError):  # the listener is closed at shutdown
        httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False)


def test_metrics_port_in_use_is_a_startup_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = Daemon(daemon_config(tmp_path, metrics_listen=f"127.0.0.1:{port}"))
        with pytest.raises(DaemonStartupError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            asyncio.run(daemon.serve())
    assert not (tmp_path / "state").exists()  # found before the state dir and DB were created


def test_unwritable_state_dir_is_a_startup_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the state dir should be")
    with pytest.raises(DaemonStartupError, match="daemon.state_dir: .*/state is a file, not a directory"):
        asyncio.run(Daemon(daemon_config(tmp_path)).serve())


def test_loop_lag_is_measured_on_each_tick(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rollbackd")
    metrics = Metrics()
    daemon = Daemon(daemon_config(tmp_path), metrics=metrics)
    ticks = []

    def on_tick() -> None:
        ticks.append(metrics.registry.get_sample_value("rollbackd_loop_lag_seconds"))
        daemon.request_exit()

    daemon.tick_listeners.append(on_tick)
    asyncio.run(asyncio.wait_for(daemon.serve(), 60))
    assert len(ticks) == 1 and ticks[0] is not None and ticks[0] >= 0
    assert "vbrpg/rows: ok" in caplog.text
    assert "stopped" in caplog.text


@pytest.mark.e2e
def test_rollbackd_run_probes_the_example_service_and_stops_cleanly_on_sigterm(
    running_daemon: DaemonProcess,
) -> None:
    exposition = running_daemon.scrape_with_every_probe()
    for name in ("health", "latency", "sqlite_lock", "integrity", "schema", "rows", "process"):
        assert f'rollbackd_probe_success{{probe="{name}",service="vbrpg"}} 1.0' in exposition, (
            name,
            running_daemon.log_tail(),
        )
    assert 'rollbackd_schema_state{service="vbrpg",state="in_sync"} 1.0' in exposition
    assert 'rollbackd_service_process_up{service="vbrpg"} 1.0' in exposition
    running_daemon.process.send_signal(signal.SIGTERM)
    assert running_daemon.process.wait(timeout=30) == 0
    log = running_daemon.log_tail()
    assert "received SIGTERM, shutting down" in log
    assert "stopped" in log
    assert "Traceback" not in log
    assert "did not stop" not in log  # every probe task ended when cancelled


@pytest.mark.e2e
def test_rollbackd_probe_prints_every_probe_once(tmp_path: Path, served_vbrpg: VbrpgApp) -> None:
    config = write_daemon_config(tmp_path / "rollbackd.toml", served_vbrpg, free_port(), served_vbrpg.create_room())
    result = subprocess.run(
        [sys.executable, "-m", "rollbackd", "--config", str(config), "probe", "vbrpg", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    observations = json.loads(result.stdout)
    assert [entry["probe"] for entry in observations] == list(PROBE_NAMES)
    assert all(entry["ok"] for entry in observations)
    served_vbrpg.stop()
    human = subprocess.run(
        [sys.executable, "-m", "rollbackd", "--config", str(config), "probe"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert human.returncode == 1
    assert "FAIL connect_refused" in human.stdout


def test_rollbackd_probe_of_an_unknown_service_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "rollbackd.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[[service]]\nname = "vbrpg"\nworkdir = "{tmp_path}"\n'
        f'database = "vbrpg.db"\nbase_url = "http://127.0.0.1:9"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "rollbackd", "--config", str(config), "probe", "other"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "no service named 'other'" in result.stderr


def test_a_second_sigint_does_not_wait_for_a_stubborn_task(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    daemon = Daemon(daemon_config(tmp_path))
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # a task that ignores cancellation
                daemon.handle_exit(signal.SIGINT)
                daemon.handle_exit(signal.SIGINT)
                await release.wait()

    async def serve() -> None:
        try:
            await daemon.serve()
        finally:
            release.set()

    daemon.add_task_factory("stubborn", stubborn)
    asyncio.run(asyncio.wait_for(serve(), 60))
    assert daemon.force_exit
    assert "task stubborn did not stop within 0s" in caplog.text
