"""The daemon starved of CPU for real (tests/daemon/cpu_starvation.py): its own lag never becomes an action.

One daemon, one healthy example service, three phases: starved throughout → no action and no incident, the
overload visible in /metrics and `rollbackd status`, and the failures it measured counted as inconclusive; the
service killed while the daemon is starved → restarted only once the lag is gone; a corruption a completed
integrity check proved while starved → acted on at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rollbackd.state.history import History, Incident
from tests.daemon.cpu_starvation import CpuStarvation, mechanism
from tests.probes.example_app import VbrpgApp
from tests.support.detached_service import DetachedService
from tests.support.rollbackd_config import FAST_RULES, daemon_toml, service_toml
from tests.support.rollbackd_daemon import DaemonProcess, Samples, rollbackd_run, wait_for
from tests.support.vbrpg_service import run_cli

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(mechanism() is None, reason="no CPU cgroup and no taskset to starve the daemon with"),
]

RECOVERY = """
[service.policy]
verify_timeout = "10s"
"""


def incidents(state: Path) -> list[Incident]:
    history = History(state / "rollbackd.db")
    try:
        return list(reversed(history.incidents("vbrpg")))
    finally:
        history.close()


def metric(daemon: DaemonProcess, name: str, **labels: str) -> float | None:
    samples = daemon.scrape()
    return samples.get(name, **labels) if samples is not None else None


def actions_taken(samples: Samples) -> float:
    return sum(
        samples.get("rollbackd_recovery_actions_total", **labels) or 0.0
        for labels in samples.labelsets("rollbackd_recovery_actions_total")
    )


@pytest.fixture
def starved_setup(
    tmp_path: Path, make_app: Callable[[str], VbrpgApp], metrics_port: int
) -> Iterator[tuple[VbrpgApp, DaemonProcess, CpuStarvation]]:
    app = make_app("vbrpg")
    state = tmp_path / "state"
    config = tmp_path / "rollbackd.toml"
    service = DetachedService.for_app(app)
    service.start()
    try:
        # A 500 ms health timeout: a daemon left 1 % of a core, in one burst a second, misses it often. The share
        # is about half of what the daemon needs at these intervals (issue 13 halved that need: at 2 % it was
        # seldom starved enough to miss one).
        config.write_text(
            daemon_toml(state, metrics_port)
            + service_toml(
                app, "vbrpg", every="500ms", health_timeout="500ms", control=True, extra=FAST_RULES + RECOVERY
            )
        )
        with rollbackd_run(config, state, metrics_port) as daemon:
            daemon.wait_ready(backups_of=("vbrpg",))
            starvation = CpuStarvation(daemon.process.pid, share=0.01)
            try:
                yield app, daemon, starvation
            finally:
                starvation.lift()
    finally:
        service.stop()


def test_a_starved_daemon_holds_its_decisions_then_acts_on_real_faults(
    starved_setup: tuple[VbrpgApp, DaemonProcess, CpuStarvation], tmp_path: Path
) -> None:
    app, daemon, starvation = starved_setup
    state = tmp_path / "state"

    # 1. Starved, the service healthy throughout: the failures it measures are its own, and nothing happens.
    starvation.apply()
    wait_for(lambda: metric(daemon, "rollbackd_overloaded") == 1, "rollbackd_overloaded 1", log=daemon.log_tail)
    wait_for(
        lambda: (metric(daemon, "rollbackd_probe_inconclusive_total", service="vbrpg", probe="health") or 0) >= 3,
        "health runs the starved daemon spoiled itself, counted as inconclusive",
        timeout=120,
        log=daemon.log_tail,
    )
    samples = daemon.scrape()
    assert samples is not None and actions_taken(samples) == 0, daemon.log_tail()
    assert incidents(state) == [], daemon.log_tail()
    status = daemon.cli("status")
    assert "overloaded: holding decisions" in status.stdout, status.stdout
    assert daemon.status_json()["daemon"]["self_load"]["overloaded"] is True

    # 2. The service dies while the daemon is starved: restarted once the lag is gone, not before.
    assert run_cli("fault", "kill", "--pidfile", app.pidfile).returncode == 0
    wait_for(
        lambda: metric(daemon, "rollbackd_service_process_up", service="vbrpg") == 0,
        "the starved daemon to see the process gone",
        timeout=120,
        log=daemon.log_tail,
    )
    assert incidents(state) == [], daemon.log_tail()
    lifted = time.time()
    starvation.lift()
    incident = wait_for(
        lambda: next((i for i in incidents(state) if i.outcome != "open"), None),
        "the kill handled once calm",
        timeout=120,
        log=daemon.log_tail,
    )
    assert incident.outcome == "recovered" and incident.opened_at >= lifted, (incident.notes, daemon.log_tail())
    assert [(action.action, action.outcome) for action in incident.actions] == [("restart", "success")]
    assert "no longer overloaded" in daemon.log_text()

    # 3. A corruption that a completed integrity check proved is acted on while the daemon is starved.
    wait_for(lambda: metric(daemon, "rollbackd_overloaded") == 0, "calm", log=daemon.log_tail)
    starvation.apply()
    wait_for(lambda: metric(daemon, "rollbackd_overloaded") == 1, "overloaded again", log=daemon.log_tail)
    assert run_cli("fault", "corrupt", "--db", app.database).returncode == 0
    corrupt = wait_for(
        lambda: next((i for i in incidents(state) if i.rule == "integrity-failed" and i.actions), None),
        "the corruption acted on",
        timeout=120,
        log=daemon.log_tail,
    )
    # Still starved: it did not wait for calm. (A scrape the starved daemon has no CPU to answer yet is retried.)
    [overloaded] = wait_for(
        lambda: answered if (answered := [metric(daemon, "rollbackd_overloaded")]) != [None] else None,
        "a scrape the starved daemon answers",
        timeout=60,
        log=daemon.log_tail,
    )
    assert overloaded == 1
    assert corrupt.actions and corrupt.actions[0].action == "restore", daemon.log_tail()
    starvation.lift()
    daemon.assert_running()
    daemon.assert_no_traceback()
