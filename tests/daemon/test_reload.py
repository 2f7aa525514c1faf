"""SIGHUP: `rollbackd run` reloads its config file the way `systemctl reload rollbackd` asks it to. A valid file is
applied (RELOADING=1, then READY=1), an invalid one is rejected with a line naming the key and the running config
stays, and a service taken out of the file stops being probed and exported."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from rollbackd.config.model import load_config
from rollbackd.probes import PROBE_NAMES
from rollbackd.runtime.daemon import Daemon
from rollbackd.runtime.status_client import StatusSocketError, query_status
from tests.probes.example_app import VbrpgApp, serving
from tests.support.notify_listener import NotifyListener
from tests.support.rollbackd_config import daemon_toml, service_toml
from tests.support.rollbackd_daemon import DaemonProcess, Samples, rollbackd_run, wait_for

NO_LATENCY = set(PROBE_NAMES) - {"latency"}  # the latency probe runs only with paths to time
INVALID_KEY = """
[service.policy]
max_action = 3
"""


def reload_and_wait(daemon: DaemonProcess, notify: NotifyListener) -> int:
    """SIGHUP; wait for RELOADING=1 and the READY=1 after it; return the index of that READY=1."""
    start = len(notify.datagrams)
    daemon.signal(signal.SIGHUP)
    reloading = notify.wait_index("RELOADING", "1", start=start)
    return notify.wait_index("READY", "1", start=reloading)


def reloads(samples: Samples, outcome: str) -> float:
    return samples.get("rollbackd_config_reloads_total", outcome=outcome) or 0.0


def probed_again(daemon: DaemonProcess, service: str, after: Samples, probes: set[str]) -> Samples:
    """Wait until each of ``probes`` of ``service`` has finished a run since the scrape ``after``; return the
    scrape that shows it."""
    before = {
        probe: after.get("rollbackd_probe_last_run_timestamp_seconds", service=service, probe=probe) or 0.0
        for probe in probes
    }

    def every_probe_ran() -> Samples | None:
        samples = daemon.scrape()
        if samples is None:
            return None
        ran = all(
            (samples.get("rollbackd_probe_last_run_timestamp_seconds", service=service, probe=probe) or 0.0) > at
            for probe, at in before.items()
        )
        return samples if ran else None

    return wait_for(every_probe_ran, f"another round of {service}'s probes {sorted(probes)}", log=daemon.log_tail)


@pytest.mark.e2e
def test_sighup_applies_a_valid_config_keeps_the_running_one_on_an_invalid_one_and_drops_a_removed_service(
    tmp_path: Path, make_app: Callable[[str], VbrpgApp], notify: NotifyListener, metrics_port: int
) -> None:
    alpha, beta = make_app("alpha"), make_app("beta")
    config = tmp_path / "rollbackd.toml"
    state = tmp_path / "state"
    head = daemon_toml(state, metrics_port)
    with serving(alpha), serving(beta):
        room = alpha.create_room()
        alpha_toml = service_toml(alpha, "alpha", latency_path=f"/api/rooms/{room}")
        config.write_text(head + alpha_toml)
        with rollbackd_run(config, state, metrics_port, NOTIFY_SOCKET=notify.address) as daemon:
            notify.wait_index("READY", "1")
            assert set(daemon.status_json()["services"]) == {"alpha"}

            # A valid change: a second service, and dry-run switched on.
            config.write_text(daemon_toml(state, metrics_port, dry_run=True) + alpha_toml + service_toml(beta, "beta"))
            reload_and_wait(daemon, notify)
            status = daemon.status_json()
            assert set(status["services"]) == {"alpha", "beta"}
            assert status["daemon"]["dry_run"] is True
            samples = probed_again(daemon, "beta", Samples({}), NO_LATENCY)
            assert reloads(samples, "success") == 1
            assert reloads(samples, "rejected") == 0

            # An invalid file: a misspelt key. The line names it; the running config (both services) stays.
            config.write_text(head + alpha_toml + service_toml(beta, "beta", extra=INVALID_KEY))
            reload_and_wait(daemon, notify)
            log = daemon.log_text()
            assert "reload rejected, the running config stays" in log
            assert f"{config}:" in log and "service[1].policy.max_action: unknown key" in log, daemon.log_tail()
            samples = probed_again(daemon, "beta", samples, NO_LATENCY)
            assert reloads(samples, "rejected") == 1
            assert reloads(samples, "success") == 1
            from_socket = daemon.status()
            assert from_socket is not None
            assert set(from_socket["services"]) == {"alpha", "beta"}
            assert from_socket["daemon"]["dry_run"] is True
            # `rollbackd status` still shows the running daemon, says the file would be refused, and exits 2.
            told = daemon.cli("status", "--json")
            assert told.returncode == 2, told.stdout + told.stderr
            assert set(json.loads(told.stdout)["services"]) == {"alpha", "beta"}
            assert "the file now would be refused by a reload and at the next start" in told.stderr
            assert "service[1].policy.max_action: unknown key" in told.stderr

            # beta taken out, alpha's latency probe switched off, dry-run back off: what is no longer probed is no
            # longer exported either (a stale failing series would keep an alert firing for ever).
            config.write_text(head + service_toml(alpha, "alpha"))
            reload_and_wait(daemon, notify)
            samples = probed_again(daemon, "alpha", samples, NO_LATENCY)
            samples = probed_again(daemon, "alpha", samples, NO_LATENCY)  # two rounds: beta had every chance to show
            assert "beta" not in samples.services(), sorted(k for k in samples.values if "beta" in str(k))[:5]
            assert samples.probes_reported("alpha") == NO_LATENCY
            assert not [key for key in samples.values if ("probe", "latency") in key[1]]
            assert reloads(samples, "success") == 2
            status = daemon.status_json()
            assert set(status["services"]) == {"alpha"}
            assert status["daemon"]["dry_run"] is False

            assert daemon.stop() == 0, daemon.log_tail()
    log = daemon.log_text()
    assert "beta: no longer watched" in log
    assert "Traceback" not in log


def test_rollbackd_status_answers_while_reloads_add_and_remove_a_service(
    tmp_path: Path, make_app: Callable[[str], VbrpgApp], caplog: pytest.LogCaptureFixture
) -> None:
    """`rollbackd status` asked over and over while SIGHUPs add and remove a service: every request gets the
    whole document (the status walk must not trip over the services changing under it)."""
    alpha, beta = make_app("alpha"), make_app("beta")
    for app in (alpha, beta):
        (app.database.parent / "backups").mkdir(mode=0o700)  # see test_watchdog.py: before the file watch starts
    state = tmp_path / "state"
    config = tmp_path / "rollbackd.toml"
    head = daemon_toml(state, None)  # no /metrics listener
    with serving(alpha), serving(beta):
        config.write_text(head + service_toml(alpha, "alpha"))
        daemon = Daemon(load_config(config), config_path=config)
        answers: list[set[str]] = []
        failures: list[StatusSocketError] = []
        stop = threading.Event()

        def ask_status() -> None:
            while not stop.is_set():
                try:
                    answers.append(set(query_status(state / "rollbackd.sock")["services"]))
                except StatusSocketError as error:
                    failures.append(error)

        async def reload_while_asked() -> None:
            serving_task = asyncio.create_task(daemon.serve())
            while not daemon.ready:
                await asyncio.sleep(0.05)
            asker = threading.Thread(target=ask_status, name="status-asker")
            asker.start()
            try:
                for round_ in range(8):
                    beta_toml = service_toml(beta, "beta") if round_ % 2 == 0 else ""
                    config.write_text(head + service_toml(alpha, "alpha") + beta_toml)
                    await daemon.reload()  # what SIGHUP's task runs, without waiting for the next tick
                    await asyncio.sleep(0.2)
            finally:
                stop.set()
                await asyncio.to_thread(asker.join, 30)
                daemon.request_exit()
                await serving_task

        asyncio.run(asyncio.wait_for(reload_while_asked(), 120))

    assert failures == [], failures[:3]
    assert "status request failed" not in caplog.text
    assert {"alpha", "beta"} in answers and {"alpha"} in answers  # it did see the services change


def test_a_reload_that_moves_the_state_dir_keeps_the_running_one_and_applies_the_rest(
    tmp_path: Path, make_app: Callable[[str], VbrpgApp], caplog: pytest.LogCaptureFixture
) -> None:
    """state_dir holds the history DB and the status socket the daemon has open: a reload cannot move it (that
    takes a restart, and the log says so), but the rest of the file (here dry_run) is applied."""
    alpha = make_app("alpha")
    state = tmp_path / "state"
    config = tmp_path / "rollbackd.toml"
    config.write_text(daemon_toml(state, None) + service_toml(alpha, "alpha"))
    with serving(alpha):
        daemon = Daemon(load_config(config), config_path=config)

        async def reload_with_another_state_dir() -> None:
            serving_task = asyncio.create_task(daemon.serve())
            try:
                while not daemon.ready:
                    await asyncio.sleep(0.05)
                moved = daemon_toml(tmp_path / "elsewhere", None, dry_run=True)
                config.write_text(moved + service_toml(alpha, "alpha"))
                await daemon.reload()
            finally:
                daemon.request_exit()
                await serving_task

        asyncio.run(asyncio.wait_for(reload_with_another_state_dir(), 120))

    assert daemon.config.daemon.state_dir == state
    assert daemon.config.daemon.dry_run is True
    assert "reload: state_dir changed; that takes a restart (the rest is applied)" in caplog.text
    assert not (tmp_path / "elsewhere").exists()
