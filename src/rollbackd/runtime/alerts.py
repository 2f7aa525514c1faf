"""Tell people: a JSON POST to each configured webhook when an incident opens, an action runs, a service
recovers, goes to HOLD or is resumed; and the same events as alerts to each configured Alertmanager
(runtime/alertmanager.py).

Delivery never blocks recovery: each alert is its own task with a timeout and retries with backoff; one that
still fails is logged and counted (``rollbackd_notifications_failed_total``), never raised.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from rollbackd.config.model import AlertmanagerConfig, WebhookConfig
from rollbackd.config.secrets import redact_text, secrets_of_url
from rollbackd.host.http_client import HttpClient
from rollbackd.metrics import Metrics
from rollbackd.runtime.alertmanager import AlertmanagerAlerts
from rollbackd.runtime.http_post import post_with_backoff

log = logging.getLogger(__name__)


class WebhookAlerts:
    def __init__(
        self,
        webhooks: list[WebhookConfig],
        client: HttpClient,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        alertmanagers: list[AlertmanagerConfig] | None = None,
    ) -> None:
        self.webhooks = webhooks
        self.client = client
        self.metrics = metrics
        self.clock = clock
        self.pending: set[asyncio.Task[None]] = set()
        self.alertmanager = AlertmanagerAlerts(alertmanagers or [], client, metrics, clock)

    def send(self, service: str, event: str, payload: dict[str, Any]) -> None:
        """Queue one alert to every webhook and return at once (must be called from the event loop)."""
        body = {
            "source": "rollbackd",
            "host": socket.gethostname(),
            "service": service,
            "event": event,
            "at": self.clock(),
            **payload,
        }
        log.info(
            "alert %s: %s", event, payload.get("explanation") or payload.get("reason") or "", extra={"service": service}
        )
        for webhook in self.webhooks:
            task = asyncio.create_task(self._deliver(webhook, body), name=f"webhook-{event}")
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        self.alertmanager.send(service, event, payload)

    def for_service(self, service: str) -> Callable[[str, dict[str, Any]], None]:
        """The alert callable a service's policy engine takes."""
        return lambda event, payload: self.send(service, event, payload)

    async def _deliver(self, webhook: WebhookConfig, body: dict[str, Any]) -> None:
        problem = await post_with_backoff(
            self.client, webhook.send_url, body, timeout=webhook.timeout, retries=webhook.retries
        )
        if problem is None:
            return
        self.metrics.notifications_failed.labels(service=str(body["service"])).inc()
        log.error(
            "webhook %s: %s alert not delivered after %d attempts: %s",
            redact_text(webhook.url, secrets_of_url(webhook.url)),
            body["event"],
            webhook.retries + 1,
            redact_text(problem, secrets_of_url(webhook.url)),
            extra={"service": body["service"]},
        )

    async def drain(self, timeout: float) -> None:
        """At shutdown: give queued alerts ``timeout`` seconds to go out, then cancel the rest."""
        if self.pending:
            _done, still = await asyncio.wait(set(self.pending), timeout=timeout)
            for task in still:
                task.cancel()
        await self.alertmanager.drain(timeout)
