"""What a probe saw, as plain data, and the bounded in-memory record of recent observations.

Probes produce ``Observation``s; metrics, the policy's signal windows and ``rollbackd status`` read them. Nothing
here knows what a probe does.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Observation:
    """One probe run. ``reason`` is from a small fixed vocabulary per probe ('' when ok), fit for a metric label;
    ``values`` are numbers (seconds, bytes, counts); ``detail`` is JSON-able context for people (pids, revisions,
    missing index names) that must never become a label. ``inconclusive`` says why a failure proves nothing about
    the service ('' when it is evidence): the daemon itself lagged while taking it (runtime/self_load.py)."""

    service: str
    probe: str
    ok: bool
    reason: str = ""
    values: Mapping[str, float] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
    duration: float = 0.0
    inconclusive: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "probe": self.probe,
            "ok": self.ok,
            "reason": self.reason,
            "values": dict(self.values),
            "detail": dict(self.detail),
            "started_at": self.started_at,
            "duration": self.duration,
            "inconclusive": self.inconclusive,
        }


class ObservationLog:
    """Recent observations per (service, probe), bounded by count and age, safe to read from other threads.

    The policy's windows are functions of this log; the daemon appends to it; nothing is persisted.
    """

    def __init__(self, max_per_probe: int = 2000, max_age: float = 3600.0) -> None:
        self.max_per_probe = max_per_probe
        self.max_age = max_age
        self._entries: dict[tuple[str, str], deque[Observation]] = {}
        # Probes whose entries are not in start order (the wall clock stepped back): recent() filters them all.
        self._unordered: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def append(self, observation: Observation) -> None:
        key = (observation.service, observation.probe)
        with self._lock:
            entries = self._entries.setdefault(key, deque(maxlen=self.max_per_probe))
            if entries and observation.started_at < entries[-1].started_at:
                self._unordered.add(key)
            entries.append(observation)
            horizon = observation.started_at - self.max_age
            while entries and entries[0].started_at < horizon:
                entries.popleft()

    def recent(self, service: str, probe: str, since: float | None = None) -> list[Observation]:
        """Return the observations of one probe, oldest first, started at or after ``since``. The policy asks
        after every observation, for windows of hundreds: in start order they are found by bisection."""
        key = (service, probe)
        with self._lock:
            stored = self._entries.get(key, ())
            if since is not None and key not in self._unordered:
                first = bisect.bisect_left(stored, since, key=_started_at)
                return list(itertools.islice(stored, first, None))
            entries = list(stored)
        if since is None:
            return entries
        return [entry for entry in entries if entry.started_at >= since]

    def latest(self, service: str, probe: str) -> Observation | None:
        with self._lock:
            entries = self._entries.get((service, probe))
            return entries[-1] if entries else None

    def latest_by_probe(self, service: str) -> dict[str, Observation]:
        with self._lock:
            return {
                probe: entries[-1] for (name, probe), entries in self._entries.items() if name == service and entries
            }

    def forget(self, service: str) -> None:
        """Drop a service's history (it left the config on reload)."""
        with self._lock:
            for key in [key for key in self._entries if key[0] == service]:
                del self._entries[key]
                self._unordered.discard(key)


def _started_at(observation: Observation) -> float:
    return observation.started_at
