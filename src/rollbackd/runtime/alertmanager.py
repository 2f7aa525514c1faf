"""Alerts to Prometheus Alertmanager (API v2), so they get its grouping, silences, inhibition and on-call routing.

An incident is one Alertmanager alert labelled ``alertname``, ``service``, ``rule``, ``severity`` and ``instance``
(this host). It fires when the incident opens and stays firing through HOLD: it is posted again every
``refresh`` seconds with an ``endsAt`` a few refreshes ahead, as Prometheus does, so Alertmanager's
``resolve_timeout`` does not end it while rollbackd runs, and it ends by itself if rollbackd dies (then
``RollbackdDown`` fires). It is resolved (``endsAt`` = now) when the service recovers or an operator resumes it.
Alert-only and dry-run announcements have no end event: they fire once and end after ``ANNOUNCED_FOR``.

Posts to one Alertmanager leave in order from one task (a resolve never overtakes its firing), each retried with
backoff; one that still fails is logged and counted in ``rollbackd_notifications_failed_total``, never raised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rollbackd.config.model import AlertmanagerConfig
from rollbackd.config.secrets import redact_text, secrets_of_url
from rollbackd.host.http_client import HttpClient
from rollbackd.metrics import Metrics
from rollbackd.runtime.http_post import post_with_backoff

log = logging.getLogger(__name__)

API_PATH = "/api/v2/alerts"
REFRESH = 60.0
ANNOUNCED_FOR = 3600.0

# event → (alertname, severity) of the alert it fires; "recovered", "superseded" and "resumed" resolve instead.
FIRING_EVENTS = {
    "incident_opened": ("RollbackdIncident", "critical"),
    "hold": ("RollbackdIncident", "critical"),
    "alerted": ("RollbackdAlertOnly", "warning"),
    "dry_run": ("RollbackdDryRun", "warning"),
}


@dataclass(frozen=True)
class AlertmanagerAlert:
    """One alert as Alertmanager identifies it (by its labels), with its text and its time span."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    ends_at: float | None = None  # None: firing until resolved (posted with endsAt a few refreshes ahead)

    @property
    def service(self) -> str:
        return self.labels["service"]

    def body(self, now: float, refresh: float) -> dict[str, Any]:
        ends_at = self.ends_at if self.ends_at is not None else now + 4 * refresh
        return {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": _iso(self.starts_at),
            "endsAt": _iso(ends_at),
        }


class AlertmanagerAlerts:
    """The incidents' alerts, kept firing or resolved in every configured Alertmanager."""

    def __init__(
        self,
        targets: list[AlertmanagerConfig],
        client: HttpClient,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        refresh: float = REFRESH,
        instance: str | None = None,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.clock = clock
        self.refresh = refresh
        self.instance = instance or socket.gethostname()
        self.firing: dict[tuple[str, str], AlertmanagerAlert] = {}
        self.targets: list[AlertmanagerConfig] = []
        self._queues: dict[AlertmanagerConfig, asyncio.Queue[list[dict[str, Any]]]] = {}
        self._workers: dict[AlertmanagerConfig, asyncio.Task[None]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self.configure(targets)

    def configure(self, targets: list[AlertmanagerConfig]) -> None:
        """Use ``targets`` from now on (after a reload); the firing alerts reach a new one at the next refresh."""
        self.targets = list(targets)
        for target in [target for target in self._workers if target not in self.targets]:
            self._workers.pop(target).cancel()
            self._queues.pop(target, None)

    def send(self, service: str, event: str, payload: Mapping[str, Any]) -> None:
        """Turn one rollbackd alert event into Alertmanager alerts and queue them (call from the event loop)."""
        if not self.targets:
            return
        now = self.clock()
        rule = str(payload.get("rule", ""))
        if event == "resumed":
            alerts = [self._resolve(key, now, "resumed by an operator") for key in self._keys_of(service)]
        elif event == "recovered":
            alerts = [self._resolve((service, rule), now, f"recovered after {float(payload.get('seconds', 0)):.0f}s")]
        elif event == "superseded":  # another command changed the database first: nothing left to recover
            alerts = [self._resolve((service, rule), now, str(payload.get("reason", "superseded")))]
        elif event in FIRING_EVENTS:
            alerts = [self._fire(service, event, rule, payload, now)]
        else:
            return
        self._post([alert for alert in alerts if alert is not None], now)

    def _fire(self, service: str, event: str, rule: str, payload: Mapping[str, Any], now: float) -> AlertmanagerAlert:
        alertname, severity = FIRING_EVENTS[event]
        labels = {
            "alertname": alertname,
            "service": service,
            "rule": rule,
            "severity": severity,
            "instance": self.instance,
            "source": "rollbackd",
        }
        text = str(payload.get("explanation") or payload.get("reason") or "")
        summaries = {
            "incident_opened": f"{service}: {rule}: rollbackd is recovering it",
            "hold": f"{service}: {rule}: rollbackd stopped acting (HOLD), a person must decide",
            "alerted": f"{service}: {rule} (alert only: rollbackd takes no action)",
            "dry_run": f"{service}: {rule} (dry run: nothing was changed)",
        }
        annotations = {
            "summary": summaries[event],
            "description": text,
            "incident": str(payload.get("incident", "")),
            "event": event,
        }
        if event in ("alerted", "dry_run"):
            return AlertmanagerAlert(labels, annotations, now, ends_at=now + ANNOUNCED_FOR)
        previous = self.firing.get((service, rule))
        if previous is not None and event == "hold" and not text:
            annotations["description"] = previous.annotations.get("description", "")
        alert = AlertmanagerAlert(labels, annotations, previous.starts_at if previous else now)
        self.firing[(service, rule)] = alert
        self._keep_refreshing()
        return alert

    def _resolve(self, key: tuple[str, str], now: float, how: str) -> AlertmanagerAlert | None:
        alert = self.firing.pop(key, None)
        if alert is None:
            return None
        annotations = {**alert.annotations, "event": "resolved", "resolution": how}
        return dataclasses.replace(alert, annotations=annotations, ends_at=now)

    def _keys_of(self, service: str) -> list[tuple[str, str]]:
        return [key for key in self.firing if key[0] == service]

    def _post(self, alerts: list[AlertmanagerAlert], now: float) -> None:
        if not alerts:
            return
        bodies = [alert.body(now, self.refresh) for alert in alerts]
        for target in self.targets:
            queue = self._queues.get(target)
            if queue is None:
                queue = self._queues[target] = asyncio.Queue()
                self._workers[target] = asyncio.create_task(self._deliver_in_order(target, queue))
            queue.put_nowait(bodies)

    def _keep_refreshing(self) -> None:
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_while_firing(), name="alertmanager-refresh")

    async def _refresh_while_firing(self) -> None:
        while self.firing:
            await asyncio.sleep(self.refresh)
            self._post(list(self.firing.values()), self.clock())

    async def _deliver_in_order(self, target: AlertmanagerConfig, queue: asyncio.Queue[list[dict[str, Any]]]) -> None:
        while True:
            bodies = await queue.get()
            try:
                await self._deliver(target, bodies)
            finally:
                queue.task_done()

    async def _deliver(self, target: AlertmanagerConfig, bodies: list[dict[str, Any]]) -> None:
        url = target.send_url.rstrip("/") + API_PATH
        problem = await post_with_backoff(
            self.client, url, bodies, timeout=target.timeout, retries=target.retries, with_response_text=True
        )
        if problem is None:
            return
        for service in sorted({body["labels"]["service"] for body in bodies}):
            self.metrics.notifications_failed.labels(service=service).inc()
        log.error(
            "alertmanager %s: %d alert(s) not delivered after %d attempts: %s",
            redact_text(target.url.rstrip("/") + API_PATH, secrets_of_url(target.url)),
            len(bodies),
            target.retries + 1,
            redact_text(problem, secrets_of_url(target.url)),  # a receiver's answer may quote what it was sent
        )

    async def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every queued post to be delivered or given up; True if all were."""
        joins = [asyncio.create_task(queue.join()) for queue in self._queues.values()]
        if not joins:
            return True
        _done, still = await asyncio.wait(joins, timeout=timeout)
        for task in still:
            task.cancel()
        return not still

    async def drain(self, timeout: float) -> None:
        """At shutdown: give queued posts ``timeout`` seconds to go out, then stop the workers and the refresh."""
        await self.flush(timeout)
        for task in [*self._workers.values(), *([self._refresher] if self._refresher else [])]:
            task.cancel()
        self._workers.clear()
        self._queues.clear()
        self._refresher = None


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
