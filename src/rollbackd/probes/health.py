"""The runbook's `curl http://localhost:8000/health`, with the answer (or its absence) named."""

from __future__ import annotations

from rollbackd.config.model import ServiceConfig
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.probes.base import ProbeContext
from rollbackd.probes.http_request import status_reason, timed_get
from rollbackd.target.body_expectations import UNEXPECTED_BODY, BodyExpectations


class HealthProbe:
    """GET base_url + health_path. ok = status in ``ok_status`` (any 2xx when empty) and, when the answer says
    it is JSON, a body that parses and meets ``expect_json`` / ``expect_body_contains``. Reasons: timeout,
    connect_refused, connect_error, http_5xx, http_4xx, unexpected_status, bad_body, unexpected_body."""

    name = "health"

    def __init__(self, service: ServiceConfig, context: ProbeContext) -> None:
        config = service.probes.health
        self.service = service.name
        self.interval = config.every
        self.timeout = config.timeout
        self.path = service.health_path
        self.url = service.base_url + service.health_path
        self.ok_status = frozenset(config.ok_status)
        self.expect = BodyExpectations(config.expect_json, config.expect_body_contains)
        self._http = context.http

    async def run(self) -> Observation:
        result = await timed_get(self._http, self.url, self.timeout)
        detail: dict[str, object] = {"url": self.url}
        values = {"latency": result.latency}
        if result.status is None:
            detail["error"] = result.error
            return Observation(
                self.service, self.name, ok=False, reason=result.error_reason, values=values, detail=detail
            )
        values["status_code"] = float(result.status)
        detail["status_code"] = result.status
        detail["body"] = result.snippet
        reason = status_reason(result.status, self.ok_status)
        if not reason and not result.body_is_valid():
            reason = "bad_body"
        if not reason and self.expect:
            mismatch = self.expect.mismatch(result.body)
            if mismatch:
                reason = UNEXPECTED_BODY
                detail["expectation"] = mismatch
        return Observation(self.service, self.name, ok=not reason, reason=reason, values=values, detail=detail)

    def export(self, metrics: Metrics, observation: Observation) -> None:
        metrics.health_status_code.labels(service=self.service).set(observation.values.get("status_code", 0.0))
        if "latency" in observation.values and "status_code" in observation.values:
            metrics.http_request_duration_seconds.labels(service=self.service, path=self.path).observe(
                observation.values["latency"]
            )
