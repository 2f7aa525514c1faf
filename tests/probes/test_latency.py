"""The latency probe's rolling window, fed by real requests to the example service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rollbackd.host.http_client import HttpClient
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.probes import ProbeContext, observe
from rollbackd.probes.latency import LatencyProbe, LatencyWindow, quantile
from rollbackd.state.state_dir import StateDir
from tests.probes.example_app import VbrpgApp
from tests.probes.probe_support import service_config


def measure(tmp_path: Path, app: VbrpgApp, paths: list[str], times: int, metrics: Metrics) -> list[Observation]:
    extra = f'[service.probes.latency]\npaths = {paths!r}\ntimeout = "2s"\nwindow = "1h"'.replace("'", '"')
    config = service_config(tmp_path, database=app.database, base_url=app.base_url, extra=extra)

    async def main() -> list[Observation]:
        async with HttpClient() as client:
            probe = LatencyProbe(config, ProbeContext(http=client, state_dir=StateDir(tmp_path / "state")))
            observations = []
            for _ in range(times):
                observations.append(await observe(probe))
                probe.export(metrics, observations[-1])
            return observations

    return asyncio.run(main())


def test_quantiles_interpolate_between_ranks() -> None:
    values = [0.1, 0.2, 0.3, 0.4, 1.0]
    assert quantile(values, 0.5) == 0.3
    assert quantile(values, 0.95) == pytest.approx(0.88)  # 80 % of the way from 0.4 to 1.0
    assert quantile([], 0.99) == 0.0


def test_window_forgets_samples_older_than_its_span() -> None:
    window = LatencyWindow(span=60)
    window.add(0, 5.0, True)
    window.add(30, 0.1, False)
    window.add(70, 0.2, False)  # the sample at t=0 is now out of the window
    summary = window.summary()
    assert summary["samples"] == 2
    assert summary["error_ratio"] == 0
    assert summary["p99"] < 1


def test_room_lookup_window_fills_from_real_requests(tmp_path: Path, served_vbrpg: VbrpgApp) -> None:
    code = served_vbrpg.create_room()
    path = f"/api/rooms/{code}"
    metrics = Metrics()
    observations = measure(tmp_path, served_vbrpg, [path], 5, metrics)
    last = observations[-1]
    assert all(observation.ok for observation in observations)
    assert last.values[f"{path}:samples"] == 5
    assert 0 < last.values[f"{path}:p50"] <= last.values[f"{path}:p99"]
    assert last.values["p95"] == last.values[f"{path}:p95"]
    assert last.values["latency"] == last.values[f"{path}:latency"] > 0  # the slowest path of this run
    assert last.values["error_ratio"] == 0
    sample = metrics.registry.get_sample_value
    assert sample("rollbackd_http_request_duration_seconds_count", {"service": "vbrpg", "path": path}) == 5
    # The window's percentiles are gauges: no window _count/_sum that would fall back (a counter reset to rate()).
    window = "rollbackd_http_latency_window_percentile_seconds"
    for percentile, key in (("50", "p50"), ("95", "p95"), ("99", "p99")):
        labels = {"service": "vbrpg", "path": path, "percentile": percentile}
        assert sample(window, labels) == last.values[f"{path}:{key}"]
    assert sample("rollbackd_http_latency_window_samples", {"service": "vbrpg", "path": path}) == 5
    types = {family.name: family.type for family in metrics.registry.collect()}
    assert types[window] == "gauge"
    assert "summary" not in types.values()
    metrics.forget_service("vbrpg")  # a service removed from the config on reload stops being exported
    assert sample("rollbackd_http_latency_window_samples", {"service": "vbrpg", "path": path}) is None
    assert sample(window, {"service": "vbrpg", "path": path, "percentile": "95"}) is None


def test_slow_api_raises_the_percentiles(tmp_path: Path, served_vbrpg: VbrpgApp) -> None:
    code = served_vbrpg.create_room()
    served_vbrpg.chaos(api_delay_seconds=0.3)
    [observation] = measure(tmp_path, served_vbrpg, [f"/api/rooms/{code}"], 1, Metrics())
    assert observation.values["p50"] >= 0.3


def test_unknown_room_is_an_answer_not_an_error(tmp_path: Path, served_vbrpg: VbrpgApp) -> None:
    [observation] = measure(tmp_path, served_vbrpg, ["/api/rooms/NOSUCH"], 1, Metrics())
    assert observation.ok
    assert observation.detail["/api/rooms/NOSUCH"] == {"status_code": 404}


def test_stopped_service_counts_as_errors_in_the_window(tmp_path: Path, served_vbrpg: VbrpgApp) -> None:
    code = served_vbrpg.create_room()
    served_vbrpg.stop()
    [observation] = measure(tmp_path, served_vbrpg, [f"/api/rooms/{code}", "/health"], 1, Metrics())
    assert (observation.ok, observation.reason) == (False, "connect_refused")
    assert observation.values["error_ratio"] == 1
    assert observation.values["/health:error_ratio"] == 1
