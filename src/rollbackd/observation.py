"""What a probe saw, as plain data, and the bounded in-memory record of recent observations.

Probes produce ``Observation``s; metrics, the policy's signal windows and ``rollbackd status`` read them. Nothing
here knows what a probe does. The policy reads a window of every probe after every observation, so windows are
views of the log's storage found by bisection, never copies, and the log keeps each probe's conclusive and
inconclusive runs apart as they arrive.
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, overload


@dataclass(frozen=True, slots=True)  # slots: the log holds hundreds of these per probe and service
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


# A kept run's values become a KeptValues when it has at least this many, all floats (the latency probe's 7 per
# path and 5 summaries): below it a small dict costs no more.
COMPACT_FROM = 8
MAX_LAYOUTS = 256  # distinct key lists the log shares; beyond it new ones stay plain dicts


class KeptValues(Mapping[str, float]):
    """A kept observation's values as one array of floats and a key -> index layout shared by every run with the
    same keys: ~270 bytes where a dict of 19 floats held ~1.6 KiB. The log keeps a service's latency runs over
    the policy's lookback (720 s with the default rules: 154 runs per service); nothing mutates them."""

    __slots__ = ("_layout", "_numbers")

    def __init__(self, layout: dict[str, int], numbers: array[float]) -> None:
        self._layout = layout
        self._numbers = numbers

    def __getitem__(self, key: str) -> float:
        return self._numbers[self._layout[key]]

    def get(self, key: str, default: Any = None) -> Any:
        """As a dict's: the policy reads one value of each run in its windows this way."""
        index = self._layout.get(key)
        return default if index is None else self._numbers[index]

    def __contains__(self, key: object) -> bool:
        return key in self._layout

    def __iter__(self) -> Iterator[str]:
        return iter(self._layout)

    def __len__(self) -> int:
        return len(self._layout)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, KeptValues) and other._layout is self._layout:
            return self._numbers == other._numbers
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]  # a mapping, unhashable as a dict is

    def __repr__(self) -> str:
        return repr(dict(self.items()))


class Runs(Sequence[Observation]):
    """Consecutive runs of one probe in start order: a window onto the log's storage, not a copy of it.

    The log only appends to a list or swaps in a new one (``_Column``), so a window handed out never changes;
    ``since`` narrows it by bisection. Runs not in start order (the wall clock stepped back) are never a ``Runs``:
    they are a plain list, filtered run by run."""

    __slots__ = ("_items", "_start", "_stop")

    def __init__(self, items: list[Observation], start: int = 0, stop: int | None = None) -> None:
        self._items = items
        self._start = start
        self._stop = len(items) if stop is None else stop

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, index: int) -> Observation: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Observation]: ...

    def __getitem__(self, index: int | slice) -> Observation | Sequence[Observation]:
        length = self._stop - self._start
        if isinstance(index, slice):
            start, stop, step = index.indices(length)
            if step == 1:
                return Runs(self._items, self._start + start, self._start + max(start, stop))
            return [self._items[self._start + position] for position in range(start, stop, step)]
        position = index + length if index < 0 else index
        if not 0 <= position < length:
            raise IndexError("run index out of range")
        return self._items[self._start + position]

    def __iter__(self) -> Iterator[Observation]:
        return map(self._items.__getitem__, range(self._start, self._stop))

    def __reversed__(self) -> Iterator[Observation]:
        return map(self._items.__getitem__, range(self._stop - 1, self._start - 1, -1))

    def since(self, at: float) -> Runs:
        """The runs started at or after ``at``."""
        if self._start == self._stop or self._items[self._start].started_at >= at:
            return self  # the common case when a window is narrowed again: nothing to cut
        first = bisect.bisect_left(self._items, at, self._start, self._stop, key=_started_at)
        return Runs(self._items, first, self._stop)


def runs_since(runs: Sequence[Observation], at: float) -> Sequence[Observation]:
    """The runs of ``runs`` started at or after ``at``, in their order: by bisection when they are ``Runs``."""
    if isinstance(runs, Runs):
        return runs.since(at)
    return [run for run in runs if run.started_at >= at]


@dataclass(frozen=True)
class ProbeWindow:
    """One probe's runs as the policy reads them: the conclusive ones (evidence) apart from the inconclusive ones
    (taken while the daemon itself lagged), each oldest first."""

    conclusive: Sequence[Observation] = ()
    inconclusive: Sequence[Observation] = ()

    @classmethod
    def of(cls, runs: Iterable[Observation]) -> ProbeWindow:
        """Split ``runs`` (oldest first) one by one, as a window of the log would hold them."""
        conclusive: list[Observation] = []
        inconclusive: list[Observation] = []
        previous = float("-inf")
        ordered = True
        for run in runs:
            ordered = ordered and run.started_at >= previous
            previous = run.started_at
            (inconclusive if run.inconclusive else conclusive).append(run)
        if not ordered:
            return cls(conclusive, inconclusive)
        return cls(Runs(conclusive), Runs(inconclusive))

    def since(self, conclusive: float, inconclusive: float) -> ProbeWindow:
        """The conclusive runs started at or after ``conclusive``, the inconclusive ones at or after
        ``inconclusive``."""
        kept = runs_since(self.conclusive, conclusive)
        doubtful = runs_since(self.inconclusive, inconclusive)
        if kept is self.conclusive and doubtful is self.inconclusive:
            return self
        return ProbeWindow(kept, doubtful)


# A column's dropped runs stay in its list (a window handed out may still read them) until there are this many:
# then the live ones move to a new list. Copying a window's references every few runs costs far less than the
# runs the old list would keep alive (an observation with its dicts is ~1 KB).
COMPACT_AFTER = 8


class _Column:
    """One kind of run of one probe, oldest first: appended at the end, dropped from the front."""

    __slots__ = ("items", "start")

    def __init__(self) -> None:
        self.items: list[Observation] = []
        self.start = 0

    def __len__(self) -> int:
        return len(self.items) - self.start

    def oldest(self) -> Observation:
        return self.items[self.start]

    def drop_oldest(self) -> None:
        self.start += 1
        if self.start >= COMPACT_AFTER:
            self.items = self.items[self.start :]  # a new list: a window onto the old one stays as it was
            self.start = 0

    def runs(self) -> Runs:
        return Runs(self.items, self.start, len(self.items))


class _Track:
    """Every run of one probe of one service, its conclusive and inconclusive runs kept apart, and the order in
    which they arrived (True: inconclusive) so the oldest is always the one dropped."""

    __slots__ = ("conclusive", "inconclusive", "arrivals")

    def __init__(self) -> None:
        self.conclusive = _Column()
        self.inconclusive = _Column()
        self.arrivals: deque[bool] = deque()

    def __len__(self) -> int:
        return len(self.arrivals)

    def add(self, observation: Observation) -> None:
        doubtful = bool(observation.inconclusive)
        (self.inconclusive if doubtful else self.conclusive).items.append(observation)
        self.arrivals.append(doubtful)

    def oldest(self) -> Observation:
        return (self.inconclusive if self.arrivals[0] else self.conclusive).oldest()

    def drop_oldest(self) -> None:
        (self.inconclusive if self.arrivals.popleft() else self.conclusive).drop_oldest()

    def latest(self) -> Observation | None:
        if not self.arrivals:
            return None
        return (self.inconclusive if self.arrivals[-1] else self.conclusive).items[-1]

    def in_arrival_order(self) -> list[Observation]:
        columns = {False: iter(self.conclusive.runs()), True: iter(self.inconclusive.runs())}
        return [next(columns[doubtful]) for doubtful in self.arrivals]


class ObservationLog:
    """Recent observations per (service, probe), bounded by count and age, safe to read from other threads.

    The policy's windows are functions of this log; the daemon appends to it; nothing is persisted.
    """

    def __init__(self, max_per_probe: int = 2000, max_age: float = 3600.0) -> None:
        self.max_per_probe = max_per_probe
        self.max_age = max_age
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._retention: dict[tuple[str, str], tuple[int, float]] = {}  # per probe, where retain() said
        # Probes whose entries are not in start order (the wall clock stepped back): their windows are filtered.
        self._unordered: set[tuple[str, str]] = set()
        self._layouts: dict[tuple[str, ...], dict[str, int]] = {}  # KeptValues' shared layouts, by key list
        self._lock = threading.Lock()

    def append(self, observation: Observation) -> None:
        key = (observation.service, observation.probe)
        with self._lock:
            track = self._tracks.get(key)
            if track is None:
                track = self._tracks[key] = _Track()
            latest = track.latest()
            if latest is not None:
                if observation.started_at < latest.started_at:
                    self._unordered.add(key)
                observation = _sharing_with(observation, latest)
            observation = self._compacted(observation)
            track.add(observation)
            limit, age = self._retention.get(key, (self.max_per_probe, self.max_age))
            while len(track) > limit:
                track.drop_oldest()
            horizon = observation.started_at - age
            while track and track.oldest().started_at < horizon:
                track.drop_oldest()

    def _compacted(self, observation: Observation) -> Observation:
        """``observation`` with its values as a KeptValues when they are many floats (unchanged otherwise)."""
        values = observation.values
        if len(values) < COMPACT_FROM or isinstance(values, KeptValues):
            return observation
        if not all(type(value) is float for value in values.values()):
            return observation  # an int or bool would come back a float: keep what the probe gave
        keys = tuple(values)
        layout = self._layouts.get(keys)
        if layout is None:
            if len(self._layouts) >= MAX_LAYOUTS:
                return observation
            layout = self._layouts[keys] = {key: index for index, key in enumerate(keys)}
        return replace(observation, values=KeptValues(layout, array("d", values.values())))

    def retain(self, service: str, retention: Mapping[str, tuple[int, float]]) -> None:
        """Keep at most (runs, seconds) of each named probe of ``service`` from now on (what its readers need);
        other probes keep the log's own bounds."""
        with self._lock:
            for probe, bounds in retention.items():
                self._retention[(service, probe)] = bounds

    def window(self, service: str, probe: str, since: float) -> ProbeWindow:
        """One probe's runs started at or after ``since``, conclusive and inconclusive apart, oldest first: what
        the policy reads after every observation, found by bisection (filtered after the clock stepped back)."""
        key = (service, probe)
        with self._lock:
            track = self._tracks.get(key)
            if track is None:
                return ProbeWindow()
            window = ProbeWindow(track.conclusive.runs(), track.inconclusive.runs())
            unordered = key in self._unordered
        if unordered:
            window = ProbeWindow(list(window.conclusive), list(window.inconclusive))
        return window.since(since, since)

    def recent(self, service: str, probe: str, since: float | None = None) -> list[Observation]:
        """Return the observations of one probe, conclusive or not, oldest first, started at or after ``since``
        (a copy: for ``status``, tools and tests; the policy reads ``window``)."""
        with self._lock:
            track = self._tracks.get((service, probe))
            entries = track.in_arrival_order() if track is not None else []
        if since is None:
            return entries
        return [entry for entry in entries if entry.started_at >= since]

    def latest(self, service: str, probe: str) -> Observation | None:
        with self._lock:
            track = self._tracks.get((service, probe))
            return track.latest() if track is not None else None

    def latest_by_probe(self, service: str) -> dict[str, Observation]:
        with self._lock:
            latest = {probe: track.latest() for (name, probe), track in self._tracks.items() if name == service}
        return {probe: observation for probe, observation in latest.items() if observation is not None}

    def forget(self, service: str) -> None:
        """Drop a service's history (it left the config on reload)."""
        with self._lock:
            for key in [key for key in self._tracks if key[0] == service]:
                del self._tracks[key]
                self._unordered.discard(key)
            for key in [key for key in self._retention if key[0] == service]:
                del self._retention[key]


def _sharing_with(observation: Observation, previous: Observation) -> Observation:
    """``observation``, holding ``previous``'s ``values`` or ``detail`` where they are equal: most runs of a probe
    repeat the one before (the same status, the same counts, the same lock state), and the log keeps hundreds
    of runs per probe. Nothing mutates an observation's mappings, so one object can serve both."""
    values = previous.values if observation.values == previous.values else observation.values
    detail = previous.detail if observation.detail == previous.detail else observation.detail
    if values is observation.values and detail is observation.detail:
        return observation
    return replace(observation, values=values, detail=detail)


def _started_at(observation: Observation) -> float:
    return observation.started_at
