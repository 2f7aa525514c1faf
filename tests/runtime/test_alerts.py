"""Webhook alerts against a real HTTP server: delivered as JSON, retried with backoff, never raised."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rollbackd.config.model import AlertmanagerConfig, WebhookConfig, validated
from rollbackd.host.http_client import HttpClient
from rollbackd.metrics import Metrics
from rollbackd.runtime.alerts import WebhookAlerts


class Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    paths: list[str] = []
    failures_left = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Receiver.received.append(body)
        Receiver.paths.append(self.path)
        if Receiver.failures_left > 0:
            Receiver.failures_left -= 1
            self.send_response(503)
        else:
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.received = []
    Receiver.paths = []
    Receiver.failures_left = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def webhook(url: str, **settings: object) -> WebhookConfig:
    return validated(WebhookConfig, {"url": url, **settings})


def send(webhooks: list[WebhookConfig], metrics: Metrics) -> None:
    async def run() -> None:
        async with HttpClient() as client:
            alerts = WebhookAlerts(webhooks, client, metrics)
            alerts.for_service("vbrpg")("hold", {"incident": 7, "rule": "data-loss", "reason": "flap limit"})
            await alerts.drain(timeout=30)

    asyncio.run(run())


def test_an_alert_is_posted_as_json(receiver: str) -> None:
    metrics = Metrics()
    send([webhook(receiver)], metrics)
    [body] = Receiver.received
    assert body["source"] == "rollbackd"
    assert (body["service"], body["event"], body["incident"], body["rule"]) == ("vbrpg", "hold", 7, "data-loss")


def test_a_failing_receiver_is_retried_then_counted_not_raised(receiver: str) -> None:
    Receiver.failures_left = 2
    metrics = Metrics()
    send([webhook(receiver, retries=3, timeout="2s")], metrics)
    assert len(Receiver.received) == 3  # two 503s, then delivered
    assert metrics.registry.get_sample_value("rollbackd_notifications_failed_total", {"service": "vbrpg"}) is None

    Receiver.received = []
    Receiver.failures_left = 10
    send([webhook(receiver, retries=1, timeout="2s")], metrics)
    assert len(Receiver.received) == 2
    assert metrics.registry.get_sample_value("rollbackd_notifications_failed_total", {"service": "vbrpg"}) == 1


def test_an_unreachable_webhook_does_not_stop_the_others(receiver: str) -> None:
    metrics = Metrics()
    send([webhook("http://127.0.0.1:9/nothing", retries=0, timeout="1s"), webhook(receiver)], metrics)
    assert len(Receiver.received) == 1
    assert metrics.registry.get_sample_value("rollbackd_notifications_failed_total", {"service": "vbrpg"}) == 1


def test_a_secret_segment_is_sent_unwrapped_and_a_failed_delivery_logs_no_secret(
    receiver: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    send([webhook(receiver + "/{secret:Hooksecret99}?token=tok3nvalue")], metrics)
    assert Receiver.paths == ["/hook/Hooksecret99?token=tok3nvalue"]

    caplog.set_level(logging.ERROR, logger="rollbackd.runtime.alerts")
    send([webhook("http://ops:pw4hook@127.0.0.1:9/{secret:Hooksecret99}?token=tok3nvalue", retries=0)], metrics)
    [line] = [record.getMessage() for record in caplog.records if "not delivered" in record.getMessage()]
    assert line.startswith("webhook http://***@127.0.0.1:9/***?token=***: hold alert not delivered"), line
    for secret in ("Hooksecret99", "tok3nvalue", "pw4hook"):
        assert secret not in line


class Echoing(BaseHTTPRequestHandler):
    """A receiver that refuses, and says in its answer what it was sent (as proxies and some gateways do)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        answer = f"refused {self.path} from {self.headers.get('Authorization', '')}".encode()
        self.send_response(400)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


def test_an_alertmanager_that_echoes_the_request_has_its_answer_logged_without_the_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echoing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    target = validated(
        AlertmanagerConfig,
        {"url": f"http://ops:pw4am@127.0.0.1:{server.server_port}/{{secret:Amsecret42}}", "retries": 0},
    )
    metrics = Metrics()

    async def run() -> None:
        async with HttpClient() as client:
            alerts = WebhookAlerts([], client, metrics, alertmanagers=[target])
            alerts.for_service("vbrpg")("hold", {"incident": 7, "rule": "data-loss", "reason": "flap limit"})
            assert await alerts.alertmanager.flush(timeout=30)
            await alerts.drain(timeout=5)

    caplog.set_level(logging.ERROR, logger="rollbackd.runtime.alertmanager")
    try:
        asyncio.run(run())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    [line] = [record.getMessage() for record in caplog.records if "not delivered" in record.getMessage()]
    assert "HTTP 400: refused /***/api/v2/alerts" in line, line  # the receiver's answer is kept, redacted
    for secret in ("Amsecret42", "pw4am", "b3BzOnB3NGFt"):  # the last: ops:pw4am as Basic credentials
        assert secret not in line
