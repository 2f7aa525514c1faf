"""The runbook's `curl -w "%{time_total}"` on API paths, kept as a rolling window per path.

The window lives in the probe object (memory only): after a restart it refills within one ``window``. A timed-out
request enters the window at its timeout (a lower bound of its latency), so a hanging path raises p95 instead of
disappearing from it. Errors are transport failures and 5xx answers; a 4xx is an answer with a real latency.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Sequence

from rollbackd.config.model import ServiceConfig
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.probes.base import ProbeContext
from rollbackd.probes.http_request import HttpResult, timed_get

QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
PERCENTILE_LABELS = tuple((key, f"{q * 100:g}") for key, q in QUANTILES)  # rollbackd_http_latency_window_...
# What a run reports per path: this run's latency and the window's summary (LatencyWindow.summary).
VALUE_KEYS = ("latency", *(key for key, _ in QUANTILES), "error_ratio", "samples", "sum")


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); 0.0 for no values."""
    if not sorted_values:
        return 0.0
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


class LatencyWindow:
    """(time, latency, failed) samples of one path over the last ``span`` seconds."""

    def __init__(self, span: float) -> None:
        self.span = span
        self._samples: deque[tuple[float, float, bool]] = deque()

    def add(self, at: float, latency: float, failed: bool) -> None:
        self._samples.append((at, latency, failed))
        while self._samples and self._samples[0][0] < at - self.span:
            self._samples.popleft()

    def summary(self) -> dict[str, float]:
        latencies = sorted(sample[1] for sample in self._samples)
        failures = sum(1 for sample in self._samples if sample[2])
        summary = {name: quantile(latencies, q) for name, q in QUANTILES}
        summary["error_ratio"] = failures / len(self._samples) if self._samples else 0.0
        summary["samples"] = float(len(self._samples))
        summary["sum"] = sum(latencies)
        return summary


class LatencyProbe:
    """GET every configured path once per run. Values per path (``<path>:p95``, ``<path>:error_ratio``, ...) and
    the worst path's (``p50``, ``p95``, ``p99``, ``error_ratio``, this run's ``latency``) for rules that do not
    care which path."""

    name = "latency"

    def __init__(self, service: ServiceConfig, context: ProbeContext) -> None:
        config = service.probes.latency
        self.service = service.name
        self.interval = config.every
        self.timeout = config.timeout
        self.paths = list(config.paths)
        self._base_url = service.base_url
        self._http = context.http
        self._clock: Callable[[], float] = context.clock
        self.windows = {path: LatencyWindow(config.window) for path in self.paths}
        # Each path's value keys made once: every observation the log keeps shares these strings instead of
        # holding its own (the log keeps a service's latency runs over the policy's lookback).
        self._keys = {path: {key: f"{path}:{key}" for key in VALUE_KEYS} for path in self.paths}

    async def run(self) -> Observation:
        results = await asyncio.gather(
            *(timed_get(self._http, self._base_url + path, self.timeout) for path in self.paths)
        )
        now = self._clock()
        values: dict[str, float] = {}
        detail: dict[str, object] = {}
        reason = ""
        for path, result in zip(self.paths, results, strict=True):
            failed, path_reason = _failure(result)
            latency = min(result.latency, self.timeout) if result.error_reason == "timeout" else result.latency
            self.windows[path].add(now, latency, failed)
            summary = self.windows[path].summary()
            keys = self._keys[path]
            values[keys["latency"]] = latency
            values.update({keys[key]: value for key, value in summary.items()})
            detail[path] = (
                {"status_code": result.status, "error": result.error} if failed else {"status_code": result.status}
            )
            reason = reason or path_reason
        for key in ("p50", "p95", "p99", "error_ratio", "latency"):
            values[key] = max((values[self._keys[path][key]] for path in self.paths), default=0.0)
        return Observation(self.service, self.name, ok=not reason, reason=reason, values=values, detail=detail)

    def export(self, metrics: Metrics, observation: Observation) -> None:
        values = observation.values
        for path in self.paths:
            keys = self._keys[path]
            if keys["latency"] not in values:
                continue
            metrics.http_request_duration_seconds.labels(self.service, path).observe(values[keys["latency"]])
            for key, percentile in PERCENTILE_LABELS:
                metrics.http_latency_window_percentile_seconds.labels(self.service, path, percentile).set(
                    values[keys[key]]
                )
            metrics.http_latency_window_samples.labels(self.service, path).set(values[keys["samples"]])
            metrics.http_error_ratio.labels(self.service, path).set(values[keys["error_ratio"]])


def _failure(result: HttpResult) -> tuple[bool, str]:
    if result.status is None:
        return True, result.error_reason
    if result.status >= 500:
        return True, "http_5xx"
    return False, ""
