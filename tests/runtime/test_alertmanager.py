"""Alerts to a real Prometheus Alertmanager (Debian: prometheus-alertmanager) started on a free loopback port:
an incident is listed by its API with the labels a route matches on, then resolved; a dead one is counted."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from rollbackd.config.model import AlertmanagerConfig, parse_config
from rollbackd.host.http_client import HttpClient
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.runtime.alertmanager import AlertmanagerAlerts
from rollbackd.runtime.alerts import WebhookAlerts
from rollbackd.runtime.daemon import Daemon
from tests.probes.game_database import make_game_database
from tests.support.rollbackd_daemon import wait_for
from tests.support.vbrpg_service import free_port

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

pytestmark = pytest.mark.skipif(
    ALERTMANAGER is None, reason="needs the Debian package prometheus-alertmanager (its binary is not installed)"
)

CONFIG = """\
route:
  receiver: "null"
  group_by: [service, rule]
receivers:
  - name: "null"
"""


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Alertmanager on 127.0.0.1 (clustering off, so no fixed gossip port), its config and data in a tmp dir."""
    assert ALERTMANAGER is not None
    root = tmp_path_factory.mktemp("alertmanager")
    (root / "alertmanager.yml").write_text(CONFIG)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (root / "alertmanager.log").open("wb") as output:
        process = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={root / 'alertmanager.yml'}",
                f"--storage.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: _ready(url), f"Alertmanager on {url} (log: {root / 'alertmanager.log'})")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", trust_env=False, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def listed(url: str, service: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager's API lists for ``service`` (resolved ones are not listed)."""
    response = httpx.get(f"{url}/api/v2/alerts", params={"filter": f'service="{service}"'}, trust_env=False, timeout=5)
    response.raise_for_status()
    alerts: list[dict[str, Any]] = response.json()
    return alerts


def test_an_incident_is_listed_with_its_labels_and_resolved_when_the_service_recovers(alertmanager: str) -> None:
    metrics = Metrics(CollectorRegistry())

    async def run() -> None:
        async with HttpClient() as client:
            alerts = WebhookAlerts([], client, metrics, alertmanagers=[AlertmanagerConfig(url=alertmanager)])
            alerts.send("amtest", "incident_opened", {"incident": 3, "rule": "integrity", "explanation": "corrupt"})
            alerts.send("amother", "incident_opened", {"incident": 4, "rule": "health-failing", "explanation": "5xx"})
            assert await alerts.alertmanager.flush(timeout=30)
            [firing] = listed(alertmanager, "amtest")
            assert firing["labels"] == {
                **firing["labels"],
                "alertname": "RollbackdIncident",
                "service": "amtest",
                "rule": "integrity",
                "severity": "critical",
            }
            assert firing["labels"]["instance"]  # this host, so a fleet's alerts say where
            assert firing["status"]["state"] == "active"
            assert firing["annotations"]["description"] == "corrupt"

            alerts.send("amtest", "hold", {"incident": 3, "rule": "integrity", "reason": "verification failed"})
            assert await alerts.alertmanager.flush(timeout=30)
            [held] = listed(alertmanager, "amtest")  # the same alert (same labels), now saying HOLD
            assert "HOLD" in held["annotations"]["summary"]
            assert held["startsAt"] == firing["startsAt"]

            alerts.send("amtest", "recovered", {"incident": 3, "rule": "integrity", "seconds": 12.0})
            assert await alerts.alertmanager.flush(timeout=30)
            assert listed(alertmanager, "amtest") == []  # resolved: endsAt has passed
            assert len(listed(alertmanager, "amother")) == 1  # the other service's incident still fires

            alerts.send("amother", "resumed", {"reason": "resumed by an operator"})
            assert await alerts.alertmanager.flush(timeout=30)
            assert listed(alertmanager, "amother") == []
            await alerts.drain(5)

    asyncio.run(run())
    assert metrics.registry.get_sample_value("rollbackd_notifications_failed_total", {"service": "amtest"}) is None


def test_an_alertmanager_that_does_not_answer_is_retried_then_counted(alertmanager: str) -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.initialise_service("amdead", [], {})
    dead = AlertmanagerConfig(url=f"http://127.0.0.1:{free_port()}", timeout=1.0, retries=1)
    live = AlertmanagerConfig(url=alertmanager)

    async def run() -> None:
        async with HttpClient() as client:
            alerts = WebhookAlerts([], client, metrics, alertmanagers=[dead, live])
            alerts.send("amdead", "alerted", {"incident": 9, "rule": "slow-no-deploy", "explanation": "p95 2s"})
            assert await alerts.alertmanager.flush(timeout=30)
            await alerts.drain(5)

    asyncio.run(run())
    assert metrics.registry.get_sample_value("rollbackd_notifications_failed_total", {"service": "amdead"}) == 1
    [announced] = listed(alertmanager, "amdead")  # the live one still got it
    assert announced["labels"]["alertname"] == "RollbackdAlertOnly"
    assert announced["labels"]["severity"] == "warning"


@pytest.mark.e2e
def test_the_daemon_posts_its_incident_to_alertmanager_and_keeps_it_firing_in_hold(
    tmp_path: Path, alertmanager: str
) -> None:
    """A real daemon, a service that never answers (health fails, a restart cannot help) → HOLD, listed."""
    database = tmp_path / "amdaemon.db"
    make_game_database(database)
    (tmp_path / "data" / "backups").mkdir(parents=True, mode=0o700)  # before the file watch starts (see daemon loop)
    text = f"""
[daemon]
state_dir = "{tmp_path / "state"}"
metrics_listen = ""
shutdown_timeout = "5s"

[[daemon.alertmanager]]
url = "{alertmanager}"
timeout = "2s"

[[service]]
name = "amdaemon"
workdir = "{tmp_path}"
database = "{database}"
base_url = "http://127.0.0.1:9"
control = {{ kind = "command", start = ["true"], stop = ["true"] }}
backups = {{ enabled = false }}
policy = {{ verify_timeout = "1s" }}

[service.probes.health]
every = "100ms"
timeout = "200ms"

[[service.rules]]
name = "health-failing"
for = "300ms"
"""
    config = parse_config(text, tmp_path / "rollbackd.toml")
    daemon = Daemon(config, metrics=Metrics(CollectorRegistry()))

    def held(_observation: Observation) -> None:
        alerts = daemon.alerts.alertmanager.firing if daemon.alerts else {}
        alert = alerts.get(("amdaemon", "health-failing"))
        if alert is not None and alert.annotations["event"] == "hold":
            daemon.request_exit()  # its shutdown drains the queued posts

    daemon.observation_listeners.append(held)
    asyncio.run(asyncio.wait_for(daemon.serve(), 120))
    [listed_alert] = listed(alertmanager, "amdaemon")
    assert listed_alert["labels"]["alertname"] == "RollbackdIncident"
    assert listed_alert["labels"]["rule"] == "health-failing"
    assert listed_alert["labels"]["severity"] == "critical"
    assert "HOLD" in listed_alert["annotations"]["summary"]


def test_a_firing_incident_is_posted_again_so_alertmanager_does_not_end_it(alertmanager: str) -> None:
    """Alertmanager ends an alert at its endsAt; rollbackd moves that on while the incident lasts (HOLD)."""
    metrics = Metrics(CollectorRegistry())

    async def run() -> tuple[str, str]:
        async with HttpClient() as client:
            alerts = AlertmanagerAlerts([AlertmanagerConfig(url=alertmanager)], client, metrics, refresh=0.5)
            alerts.send("amrefresh", "incident_opened", {"incident": 5, "rule": "data-loss", "explanation": "-60%"})
            assert await alerts.flush(timeout=30)
            [first] = listed(alertmanager, "amrefresh")
            await asyncio.sleep(1.2)  # past two refreshes
            assert await alerts.flush(timeout=30)
            [later] = listed(alertmanager, "amrefresh")
            alerts.send("amrefresh", "recovered", {"incident": 5, "rule": "data-loss", "seconds": 2.0})
            await alerts.drain(30)
            return first["endsAt"], later["endsAt"]

    first_end, later_end = asyncio.run(run())
    assert datetime.fromisoformat(later_end) > datetime.fromisoformat(first_end)
    assert listed(alertmanager, "amrefresh") == []
