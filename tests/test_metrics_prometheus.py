"""A real Prometheus scrapes a real `rollbackd run` watching the example service, and promtool accepts the format."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollbackd.probes import PROBE_NAMES
from tests.probes.example_app import VbrpgApp, serving
from tests.support.rollbackd_config import write_daemon_config
from tests.support.rollbackd_daemon import DaemonProcess, rollbackd_run, wait_for
from tests.support.vbrpg_service import free_port

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"

pytestmark = pytest.mark.skipif(
    not (shutil.which(PROMETHEUS) and shutil.which(PROMTOOL)), reason="needs the Debian package prometheus"
)


@pytest.fixture
def running_daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    with serving(VbrpgApp(tmp_path / "vbrpg").create()) as app:
        config = write_daemon_config(tmp_path / "rollbackd.toml", app, free_port(), app.create_room())
        with rollbackd_run(config) as daemon:
            yield daemon


@pytest.fixture
def prometheus(tmp_path: Path, running_daemon: DaemonProcess) -> Iterator[str]:
    """Prometheus on a free loopback port, scraping the daemon every second; its storage in tmp_path."""
    target = running_daemon.metrics_url.removeprefix("http://").removesuffix("/metrics")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: rollbackd\n    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def query(prometheus: str, expression: str) -> list[dict[str, Any]]:
    try:
        response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}, trust_env=False, timeout=5)
    except httpx.TransportError:
        return []
    if response.status_code != 200:
        return []
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


@pytest.mark.e2e
def test_prometheus_scrapes_a_success_series_for_every_probe(prometheus: str, running_daemon: DaemonProcess) -> None:
    running_daemon.scrape_with_every_probe()  # the daemon has run every probe at least once

    def every_probe_scraped() -> list[dict[str, Any]] | None:
        series = query(prometheus, 'rollbackd_probe_success{job="rollbackd"}')
        return series if {entry["metric"]["probe"] for entry in series} >= set(PROBE_NAMES) else None

    series = wait_for(every_probe_scraped, "Prometheus to scrape rollbackd_probe_success for every probe")
    assert {entry["metric"]["service"] for entry in series} == {"vbrpg"}
    assert {entry["metric"]["probe"] for entry in series} == set(PROBE_NAMES)
    assert query(prometheus, 'up{job="rollbackd"}')[0]["value"][1] == "1"


@pytest.mark.e2e
def test_promtool_accepts_the_exposition(running_daemon: DaemonProcess) -> None:
    exposition = running_daemon.scrape_with_every_probe()
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""  # not even a lint remark
    # Read right: rollbackd's own process beside the watched service's, nothing that resets or starts missing.
    assert "\nprocess_resident_memory_bytes " in exposition
    assert "\npython_info{" in exposition
    assert 'rollbackd_service_process_up{service="vbrpg"} 1.0' in exposition
    assert "rollbackd_process_" not in exposition
    assert "_created" not in exposition
    assert "# TYPE rollbackd_http_latency_window_percentile_seconds gauge" in exposition
    assert " summary\n" not in exposition
    assert 'rollbackd_notifications_failed_total{service="vbrpg"} 0.0' in exposition
    assert 'rollbackd_backup_failures_total{reason="disk_full",service="vbrpg"} 0.0' in exposition
