"""One daemon, two services: whatever goes wrong with one never stops the other being probed and recovered."""

from __future__ import annotations

import errno
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rollbackd.state.history import History, Incident
from tests.probes.example_app import VbrpgApp
from tests.support.detached_service import DetachedService
from tests.support.rollbackd_config import FAST_RULES, SMOKE, daemon_toml, service_toml
from tests.support.rollbackd_daemon import DaemonProcess, Samples, rollbackd_run, wait_for
from tests.support.vbrpg_service import run_cli

pytestmark = pytest.mark.e2e

RECOVERY = """
[service.policy]
verify_timeout = "5s"
"""


@contextmanager
def detached(*apps: VbrpgApp) -> Iterator[list[DetachedService]]:
    services = [DetachedService.for_app(app) for app in apps]
    try:
        for service in services:
            service.start()
        yield services
    finally:
        for service in services:
            service.stop()


def incidents(state: Path, service: str) -> list[Incident]:
    history = History(state / "rollbackd.db")
    try:
        return list(reversed(history.incidents(service)))
    finally:
        history.close()


def closed_incident(state: Path, service: str, daemon: DaemonProcess) -> Incident:
    def closed() -> Incident | None:
        return next((incident for incident in incidents(state, service) if incident.outcome != "open"), None)

    return wait_for(closed, f"a closed incident of {service}", log=daemon.log_tail, timeout=90)


def last_runs(samples: Samples, service: str) -> dict[str, float]:
    return {
        labels["probe"]: samples.get("rollbackd_probe_last_run_timestamp_seconds", **labels) or 0.0
        for labels in samples.labelsets("rollbackd_probe_last_run_timestamp_seconds")
        if labels["service"] == service
    }


def probing_goes_on(daemon: DaemonProcess, service: str) -> Samples:
    """Wait until every probe of ``service`` that had reported has run again; return that scrape."""
    first = daemon.scrape()
    assert first is not None
    before = last_runs(first, service)
    assert before, f"{service} has no probe series"

    def all_ran_again() -> Samples | None:
        samples = daemon.scrape()
        if samples is None:
            return None
        now = last_runs(samples, service)
        return samples if all(now.get(probe, 0.0) > at for probe, at in before.items()) else None

    return wait_for(all_ran_again, f"{service}'s probes to run again", log=daemon.log_tail)


def remove_tree_being_written(path: Path) -> None:
    """rmtree while the daemon may still write into the tree (a backup and its manifest, a rotation): a file it
    removed or renamed meanwhile is no error, one it created is removed by the next pass."""

    def vanished_is_fine(function: object, name: str, error: tuple[type[BaseException], BaseException, object]) -> None:
        if not issubclass(error[0], FileNotFoundError):
            raise error[1]

    for _ in range(20):
        try:
            shutil.rmtree(path, onerror=vanished_is_fine)
        except OSError as error:
            if error.errno != errno.ENOTEMPTY:
                raise
        if not path.exists():
            return
    raise AssertionError(f"{path} kept being written into")


def test_a_service_whose_data_dir_vanished_does_not_stop_the_other_being_probed_and_restarted(
    tmp_path: Path, make_app: Callable[[str], VbrpgApp], metrics_port: int
) -> None:
    alpha, beta = make_app("alpha"), make_app("beta")
    state = tmp_path / "state"
    config = tmp_path / "rollbackd.toml"
    with detached(alpha, beta):
        room = alpha.create_room()
        extra = FAST_RULES + SMOKE + RECOVERY
        config.write_text(
            daemon_toml(state, metrics_port)
            + service_toml(alpha, "alpha", every="500ms", latency_path=f"/api/rooms/{room}", control=True, extra=extra)
            + service_toml(beta, "beta", every="500ms", control=True, extra=extra)
        )
        with rollbackd_run(config, state, metrics_port) as daemon:
            daemon.wait_ready(backups_of=("alpha", "beta"))

            # beta's whole data dir goes: database, WAL, backups. Its service keeps running, answering 503.
            remove_tree_being_written(beta.database.parent)
            # And alpha's service dies, as after a crash.
            assert run_cli("fault", "kill", "--pidfile", alpha.pidfile).returncode == 0

            incident = closed_incident(state, "alpha", daemon)
            assert incident.outcome == "recovered", (incident.notes, daemon.log_tail())
            assert [(action.action, action.outcome) for action in incident.actions] == [("restart", "success")]
            probing_goes_on(daemon, "alpha")

            # beta is not recovered (nothing to restore from), but it is still watched and its failure reported.
            beta_incident = closed_incident(state, "beta", daemon)
            assert beta_incident.outcome == "hold", beta_incident.notes
            samples = probing_goes_on(daemon, "beta")
            assert samples.get("rollbackd_probe_success", service="beta", probe="health") == 0
            assert samples.get("rollbackd_probe_success", service="alpha", probe="health") == 1
            status = daemon.status_json()
            assert status["services"]["beta"]["policy"]["state"] == "hold"
            assert status["services"]["alpha"]["policy"]["state"] == "ok"

            daemon.assert_running()
            daemon.signal(signal.SIGTERM)
            assert daemon.process.wait(timeout=60) == 0, daemon.log_tail()
    daemon.assert_no_traceback()
