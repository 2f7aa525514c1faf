"""The health probe against the real example service: up, stopped, slow, failing, and a body that lies."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rollbackd.host.http_client import HttpClient
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.probes import ProbeContext, observe
from rollbackd.probes.health import HealthProbe
from rollbackd.probes.http_request import status_reason
from rollbackd.state.state_dir import StateDir
from tests.probes.example_app import VbrpgApp
from tests.probes.probe_support import service_config


def check_health(
    tmp_path: Path, base_url: str, extra: str = "", times: int = 1, metrics: Metrics | None = None
) -> list[Observation]:
    """Run a health probe ``times`` times (exporting into ``metrics`` when given), as the daemon would."""
    config = service_config(tmp_path, database=tmp_path / "vbrpg.db", base_url=base_url, extra=extra)

    async def main() -> list[Observation]:
        async with HttpClient() as client:
            probe = HealthProbe(config, ProbeContext(http=client, state_dir=StateDir(tmp_path / "state")))
            observations = [await observe(probe) for _ in range(times)]
            for observation in observations:
                if metrics is not None:
                    probe.export(metrics, observation)
            return observations

    return asyncio.run(main())


def test_service_up_is_ok_with_its_status_and_latency(tmp_path: Path, served_vbrpg: VbrpgApp) -> None:
    [observation] = check_health(tmp_path, served_vbrpg.base_url)
    assert observation.ok, observation
    assert observation.values["status_code"] == 200
    assert observation.values["latency"] > 0
    assert '"status":"ok"' in observation.detail["body"]


def test_service_stopped_is_connect_refused(tmp_path: Path, served_vbrpg: VbrpgApp) -> None:
    served_vbrpg.stop()
    [observation] = check_health(tmp_path, served_vbrpg.base_url)
    assert (observation.ok, observation.reason) == (False, "connect_refused")
    assert "status_code" not in observation.values


def test_health_slower_than_the_timeout_is_timeout(tmp_path: Path, served_vbrpg: VbrpgApp) -> None:
    served_vbrpg.chaos(health_delay_seconds=1)
    [observation] = check_health(tmp_path, served_vbrpg.base_url, '[service.probes.health]\ntimeout = "300ms"')
    assert (observation.ok, observation.reason) == (False, "timeout")


def test_503_is_http_5xx_with_the_services_reason(tmp_path: Path, served_vbrpg: VbrpgApp) -> None:
    served_vbrpg.chaos(health_503_count=1)
    failed, recovered = check_health(tmp_path, served_vbrpg.base_url, times=2)
    assert (failed.ok, failed.reason) == (False, "http_5xx")
    assert failed.values["status_code"] == 503
    assert '"status":"error"' in failed.detail["body"]
    assert recovered.ok


def test_unknown_revision_makes_the_service_answer_503(tmp_path: Path, served_vbrpg: VbrpgApp) -> None:
    served_vbrpg.fault("schema-skew")
    [observation] = check_health(tmp_path, served_vbrpg.base_url)
    assert observation.reason == "http_5xx"
    assert "unknown to the code" in observation.detail["body"]


class LyingHandler(BaseHTTPRequestHandler):
    """Says JSON, sends half of it (a proxy's truncated answer)."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = b'{"status": "ok", "revis'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
        pass


@pytest.fixture
def lying_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), LyingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_2xx_whose_json_does_not_parse_is_bad_body(tmp_path: Path, lying_server: str) -> None:
    [observation] = check_health(tmp_path, lying_server)
    assert (observation.ok, observation.reason) == (False, "bad_body")


def test_configured_ok_status_replaces_2xx() -> None:
    assert status_reason(204, frozenset()) == ""
    assert status_reason(302, frozenset()) == "unexpected_status"
    assert status_reason(404, frozenset()) == "http_4xx"
    assert status_reason(200, frozenset({204})) == "unexpected_status"
    assert status_reason(204, frozenset({204})) == ""


def test_exports_status_code_and_request_duration(tmp_path: Path, served_vbrpg: VbrpgApp) -> None:
    metrics = Metrics()
    check_health(tmp_path, served_vbrpg.base_url, metrics=metrics)
    sample = metrics.registry.get_sample_value
    assert sample("rollbackd_health_status_code", {"service": "vbrpg"}) == 200
    assert sample("rollbackd_http_request_duration_seconds_count", {"service": "vbrpg", "path": "/health"}) == 1


def test_a_200_that_says_degraded_fails_only_when_the_body_is_expected(tmp_path: Path, served_vbrpg: VbrpgApp) -> None:
    served_vbrpg.chaos(health_degraded=True)
    [unchecked] = check_health(tmp_path, served_vbrpg.base_url)
    assert unchecked.ok  # a status code alone cannot tell
    expect = '[service.probes.health]\nexpect_json = { "/status" = "ok" }'
    [observation] = check_health(tmp_path, served_vbrpg.base_url, expect)
    assert (observation.ok, observation.reason) == (False, "unexpected_body")
    assert observation.values["status_code"] == 200
    assert observation.detail["expectation"] == "/status is 'degraded', expected 'ok'"
    contains = '[service.probes.health]\nexpect_body_contains = \'"status":"ok"\''
    [by_text] = check_health(tmp_path, served_vbrpg.base_url, contains)
    assert by_text.reason == "unexpected_body"
    served_vbrpg.chaos()
    [healthy] = check_health(tmp_path, served_vbrpg.base_url, expect)
    assert healthy.ok, healthy


class _RecordingFinder:
    """A meta-path finder that finds nothing and notes every module the import system had to search for."""

    def __init__(self) -> None:
        self.searched: list[str] = []

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        self.searched.append(name)


def test_health_requests_search_for_no_module(tmp_path: Path, served_vbrpg: VbrpgApp) -> None:
    """No import inside a request: one that fails searches all of sys.path every time (httpcore's import of a
    missing sniffio cost 0.8 ms of CPU per request, issue 13), and the daemon's client must not bring that back."""
    check_health(tmp_path, served_vbrpg.base_url)  # the first request imports what the client needs once
    finder = _RecordingFinder()
    sys.meta_path.insert(0, finder)
    try:
        observations = check_health(tmp_path, served_vbrpg.base_url, times=3)
    finally:
        sys.meta_path.remove(finder)
    assert all(observation.ok for observation in observations), observations
    assert finder.searched == []
