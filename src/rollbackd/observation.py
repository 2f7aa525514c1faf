"""What a probe saw, as plain data, and the bounded in-memory record of recent observations.

Probes produce ``Observation``s; metrics, the policy's signal windows and ``rollbackd status`` read them. Nothing
here knows what a probe does. The policy reads a window of every probe after every observation, so windows are
views of the log's storage found by bisection, never copies, and the log keeps each probe's conclusive and
inconclusive runs apart as they arrive.

The log keeps hundreds of runs per probe and service, and most repeat the run before but for their times (the
lock probe's every second) or but for a few numbers (a latency, a CPU ratio). So it keeps runs in columns: start
times and durations in arrays of floats, and per run a reference to its "shape", the first run of a stretch equal
in everything else, and the run's own numbers (where they differ from its shape's) in one flat array. A run is
built back into an ``Observation`` when it is read.
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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


# A kept run's values become a KeptValues when they are at least this many, all floats: they then share a key
# layout with every run of the same keys, and the runs of a stretch keep only their numbers (8 bytes each).
COMPACT_FROM = 1
MAX_LAYOUTS = 256  # distinct key lists the log shares; beyond it new ones stay plain dicts


class KeptValues(Mapping[str, float]):
    """A kept observation's values as floats in an array, from ``offset`` on, and a key -> index layout shared by
    every run with the same keys: a shape's own values (an array of their own), or a run's numbers read in place
    in its column's flat array. Nothing mutates them: the log only appends to that array, past every run's."""

    __slots__ = ("_layout", "_numbers", "_offset")

    def __init__(self, layout: dict[str, int], numbers: array[float], offset: int = 0) -> None:
        self._layout = layout
        self._numbers = numbers
        self._offset = offset

    def __getitem__(self, key: str) -> float:
        return self._numbers[self._offset + self._layout[key]]

    def get(self, key: str, default: Any = None) -> Any:
        """As a dict's: the policy reads one value of each run in its windows this way."""
        index = self._layout.get(key)
        return default if index is None else self._numbers[self._offset + index]

    def __contains__(self, key: object) -> bool:
        return key in self._layout

    def __iter__(self) -> Iterator[str]:
        return iter(self._layout)

    def __len__(self) -> int:
        return len(self._layout)

    def numbers(self) -> array[float]:
        """The values in the layout's order (a copy)."""
        return self._numbers[self._offset : self._offset + len(self._layout)]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, KeptValues) and other._layout is self._layout:
            return self.numbers() == other.numbers()
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]  # a mapping, unhashable as a dict is

    def __repr__(self) -> str:
        return repr(dict(self.items()))


# The frozen dataclass's slots, set directly: a run read from a column is built without __init__'s nine
# object.__setattr__ calls (the policy reads a window's runs after every observation).
_new = object.__new__
_SETTERS: tuple[Callable[[Observation, Any], None], ...] = tuple(
    Observation.__dict__[name].__set__ for name in Observation.__slots__
)
(_set_service, _set_probe, _set_ok, _set_reason, _set_values, _set_detail, _set_started_at, _set_duration,
 _set_inconclusive) = _SETTERS  # fmt: skip


def _observed(shape: Observation, values: Mapping[str, float], started_at: float, duration: float) -> Observation:
    """``shape`` with these ``values`` and times, as ``replace`` would build it."""
    run: Observation = _new(Observation)
    _set_service(run, shape.service)
    _set_probe(run, shape.probe)
    _set_ok(run, shape.ok)
    _set_reason(run, shape.reason)
    _set_values(run, values)
    _set_detail(run, shape.detail)
    _set_started_at(run, started_at)
    _set_duration(run, duration)
    _set_inconclusive(run, shape.inconclusive)
    return run


# A column keeps its newest runs built once read, this many: the policy reads the newest runs of every window after
# every observation, and the latency rule the whole of its window (60 s with the default rules, 61 runs at the
# fastest cadence of 1 s). Older runs are built again each time they are read.
KEEP_BUILT = 64


class _RunArrays:
    """Runs of one probe, one kind, in columns: appended at the end and never changed, so a window onto them
    stays as it was; the column swaps in a new one (``after``) to drop runs from the front.

    Run ``i`` is ``shapes[i]`` with ``starts[i]`` and ``durations[i]``, and its values either its shape's
    (``offsets[i] < 0``) or a KeptValues of its shape's layout read at ``offsets[i] - origin`` in ``numbers``.
    A negative offset is ``-(position + 1)``, the position in ``numbers`` where its numbers would have been, so
    the first run of any window says where that window's numbers begin. ``built`` holds the last run as it was
    appended, and those of the newest KEEP_BUILT runs that were read since the next one was appended."""

    __slots__ = ("starts", "durations", "shapes", "offsets", "numbers", "origin", "built")

    def __init__(self, origin: int = 0) -> None:
        self.starts = array("d")
        self.durations = array("d")
        self.shapes: list[Observation] = []
        self.offsets = array("q")
        self.numbers = array("d")
        self.origin = origin  # the position of numbers[0] among every number the column ever held
        self.built: dict[int, Observation] = {}

    def __len__(self) -> int:
        return len(self.starts)

    def append(self, run: Observation, shape: Observation, offset: int | None = None) -> None:
        """Keep ``run`` as ``shape`` with its times; its values at ``offset`` in ``numbers``, or its shape's."""
        self.starts.append(run.started_at)
        self.durations.append(run.duration)
        self.shapes.append(shape)
        self.offsets.append(-(self.origin + len(self.numbers) + 1) if offset is None else offset)
        index = len(self.starts) - 1
        built = self.built
        built.pop(index - 1, None)  # built again if it is read: most runs of most probes are only read while newest
        built.pop(index - 1 - KEEP_BUILT, None)
        built[index] = run

    def newest(self) -> Observation:
        return self.built[len(self.starts) - 1]

    def run(self, index: int) -> Observation:
        """Run ``index`` (0 <= index < len) built back; the shape itself when it is that run."""
        run = self.built.get(index)
        if run is not None:
            return run
        shape = self.shapes[index]
        offset = self.offsets[index]
        started_at = self.starts[index]
        duration = self.durations[index]
        if offset >= 0:
            layout = shape.values._layout  # type: ignore[attr-defined]  # a run with numbers has a KeptValues shape
            values = KeptValues(layout, self.numbers, offset - self.origin)
            run = _observed(shape, values, started_at, duration)
        elif started_at == shape.started_at and duration == shape.duration:
            return shape
        else:
            run = _observed(shape, shape.values, started_at, duration)
        if index >= len(self.starts) - KEEP_BUILT:
            self.built[index] = run
        return run

    def forward(self, start: int, stop: int) -> Iterator[Observation]:
        """Runs ``start`` to ``stop`` (excluded), oldest first: those built read without a call."""
        built = self.built
        for index in range(start, stop):
            yield built.get(index) or self.run(index)

    def backward(self, start: int, stop: int) -> Iterator[Observation]:
        """Runs ``stop`` (excluded) down to ``start``, newest first."""
        built = self.built
        for index in range(stop - 1, start - 1, -1):
            yield built.get(index) or self.run(index)

    def repeats(self, shape: Observation, numbers: array[float]) -> int | None:
        """The offset of the last run's numbers when it is of ``shape`` and they equal ``numbers``, else None."""
        if not self.shapes or self.shapes[-1] is not shape or self.offsets[-1] < 0:
            return None
        position = self.offsets[-1] - self.origin
        return self.offsets[-1] if self.numbers[position : position + len(numbers)] == numbers else None

    def add_numbers(self, numbers: array[float]) -> int:
        """Append ``numbers``; return the offset of the run that will read them."""
        offset = self.origin + len(self.numbers)
        self.numbers.extend(numbers)
        return offset

    def after(self, start: int) -> _RunArrays:
        """A new column of the runs from ``start`` on (this one stays as it is for the windows onto it)."""
        first = self.offsets[start] if start < len(self.offsets) else -(self.origin + len(self.numbers) + 1)
        position = first if first >= 0 else -first - 1
        kept = _RunArrays(position)
        kept.starts = self.starts[start:]
        kept.durations = self.durations[start:]
        kept.shapes = self.shapes[start:]
        kept.offsets = self.offsets[start:]
        kept.numbers = self.numbers[position - self.origin :]
        if kept.starts:  # built again: the old one reads its numbers in this column's old array
            last = len(kept.starts) - 1
            kept.built[last] = kept.run(last)
        return kept

    @classmethod
    def of(cls, runs: list[Observation]) -> _RunArrays:
        """``runs`` as they are, each its own shape (read back as the very objects given)."""
        made = cls()
        for run in runs:
            made.append(run, run)
        return made


class Runs(Sequence[Observation]):
    """Consecutive runs of one probe in start order: a window onto the log's storage, not a copy of it.

    The log only appends to a column or swaps in a new one (``_Column``), so a window handed out never changes;
    ``since`` narrows it by bisection. Runs not in start order (the wall clock stepped back) are never a ``Runs``:
    they are a plain list, filtered run by run."""

    __slots__ = ("_items", "_start", "_stop")

    def __init__(self, items: _RunArrays, start: int = 0, stop: int | None = None) -> None:
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
            return [self._items.run(self._start + position) for position in range(start, stop, step)]
        position = index + length if index < 0 else index
        if not 0 <= position < length:
            raise IndexError("run index out of range")
        items = self._items
        return items.built.get(self._start + position) or items.run(self._start + position)

    def __iter__(self) -> Iterator[Observation]:
        return self._items.forward(self._start, self._stop)

    def __reversed__(self) -> Iterator[Observation]:
        return self._items.backward(self._start, self._stop)

    def since(self, at: float) -> Runs:
        """The runs started at or after ``at``."""
        starts = self._items.starts
        if self._start == self._stop or starts[self._start] >= at:
            return self  # the common case when a window is narrowed again: nothing to cut
        return Runs(self._items, bisect.bisect_left(starts, at, self._start, self._stop), self._stop)


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
        return cls(Runs(_RunArrays.of(conclusive)), Runs(_RunArrays.of(inconclusive)))

    def since(self, conclusive: float, inconclusive: float) -> ProbeWindow:
        """The conclusive runs started at or after ``conclusive``, the inconclusive ones at or after
        ``inconclusive``."""
        kept = runs_since(self.conclusive, conclusive)
        doubtful = runs_since(self.inconclusive, inconclusive)
        if kept is self.conclusive and doubtful is self.inconclusive:
            return self
        return ProbeWindow(kept, doubtful)


# A column's dropped runs stay in its arrays (a window handed out may still read them) until there are this many:
# then the live ones move to new arrays. Copying a window's columns every few runs costs far less than the runs
# the old arrays would keep alive.
COMPACT_AFTER = 8


class _Column:
    """One kind of run of one probe, oldest first: appended at the end, dropped from the front."""

    __slots__ = ("items", "start")

    def __init__(self) -> None:
        self.items = _RunArrays()
        self.start = 0

    def __len__(self) -> int:
        return len(self.items) - self.start

    def oldest_start(self) -> float:
        return self.items.starts[self.start]

    def drop_oldest(self) -> None:
        self.start += 1
        if self.start >= COMPACT_AFTER:
            self.items = self.items.after(self.start)  # new arrays: a window onto the old ones stays as it was
            self.start = 0

    def runs(self) -> Runs:
        return Runs(self.items, self.start, len(self.items))


class _Track:
    """Every run of one probe of one service, its conclusive and inconclusive runs kept apart, and the order in
    which they arrived (1: inconclusive) so the oldest is always the one dropped; and the shape of the last run,
    which the next one reuses when it repeats it."""

    __slots__ = ("conclusive", "inconclusive", "arrivals", "shape")

    def __init__(self) -> None:
        self.conclusive = _Column()
        self.inconclusive = _Column()
        self.arrivals = bytearray()  # deleting from the front of a bytearray moves no bytes
        self.shape: Observation | None = None

    def __len__(self) -> int:
        return len(self.arrivals)

    def column(self, doubtful: bool) -> _Column:
        return self.inconclusive if doubtful else self.conclusive

    def oldest_start(self) -> float:
        return self.column(bool(self.arrivals[0])).oldest_start()

    def latest_start(self) -> float:
        return self.column(bool(self.arrivals[-1])).items.starts[-1]

    def drop_oldest(self) -> None:
        doubtful = bool(self.arrivals[0])
        del self.arrivals[0]
        self.column(doubtful).drop_oldest()

    def latest(self) -> Observation | None:
        if not self.arrivals:
            return None
        return self.column(bool(self.arrivals[-1])).items.newest()

    def in_arrival_order(self) -> list[Observation]:
        columns = {0: iter(self.conclusive.runs()), 1: iter(self.inconclusive.runs())}
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
            if track and observation.started_at < track.latest_start():
                self._unordered.add(key)
            self._keep(track, observation)
            limit, age = self._retention.get(key, (self.max_per_probe, self.max_age))
            while len(track) > limit:
                track.drop_oldest()
            horizon = observation.started_at - age
            while track and track.oldest_start() < horizon:
                track.drop_oldest()

    def _keep(self, track: _Track, observation: Observation) -> None:
        """Add ``observation`` to ``track``: as a run of the last run's shape when it repeats it (its own numbers
        kept when only they differ), else as a new shape holding the last one's mappings where they are equal."""
        doubtful = bool(observation.inconclusive)
        column = track.column(doubtful).items
        values = observation.values
        layout = self._layout(values)
        shape = track.shape
        if shape is not None and _repeats(observation, shape):
            kept = shape.values
            if layout is not None and isinstance(kept, KeptValues) and kept._layout is layout:
                numbers = array("d", values.values())
                if numbers == kept.numbers():
                    column.append(_observed(shape, kept, observation.started_at, observation.duration), shape)
                else:
                    offset = column.repeats(shape, numbers)
                    if offset is None:
                        offset = column.add_numbers(numbers)
                    stored = KeptValues(layout, column.numbers, offset - column.origin)
                    column.append(_observed(shape, stored, observation.started_at, observation.duration), shape, offset)
                track.arrivals.append(doubtful)
                return
            if layout is None and _same_values(values, kept):
                column.append(_observed(shape, kept, observation.started_at, observation.duration), shape)
                track.arrivals.append(doubtful)
                return
        if shape is not None:
            observation = _sharing_with(observation, shape)
        if layout is not None and not isinstance(observation.values, KeptValues):
            observation = replace(observation, values=KeptValues(layout, array("d", values.values())))
        column.append(observation, observation)
        track.arrivals.append(doubtful)
        track.shape = observation

    def _layout(self, values: Mapping[str, float]) -> dict[str, int] | None:
        """The shared layout of ``values``' keys when they may be kept as a KeptValues (at least COMPACT_FROM,
        all floats: an int or bool would come back a float), else None."""
        if len(values) < COMPACT_FROM:
            return None
        if isinstance(values, KeptValues):
            return values._layout
        if not all(type(value) is float for value in values.values()):
            return None
        keys = tuple(values)
        layout = self._layouts.get(keys)
        if layout is None:
            if len(self._layouts) >= MAX_LAYOUTS:
                return None
            layout = self._layouts[keys] = {key: index for index, key in enumerate(keys)}
        return layout

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


def _repeats(observation: Observation, shape: Observation) -> bool:
    """``observation`` equals ``shape`` in everything but its times and values (the same probe of the same
    service: they are one track's)."""
    return (
        observation.ok is shape.ok
        and observation.reason == shape.reason
        and observation.inconclusive == shape.inconclusive
        and (observation.detail is shape.detail or observation.detail == shape.detail)
    )


def _sharing_with(observation: Observation, previous: Observation) -> Observation:
    """``observation``, holding ``previous``'s ``values`` or ``detail`` where they are equal: most runs of a probe
    repeat the one before (the same status, the same counts, the same lock state), and the log keeps hundreds
    of runs per probe. Nothing mutates an observation's mappings, so one object can serve both."""
    values = previous.values if _same_values(observation.values, previous.values) else observation.values
    detail = previous.detail if observation.detail == previous.detail else observation.detail
    if values is observation.values and detail is observation.detail:
        return observation
    return replace(observation, values=values, detail=detail)


def _same_values(values: Mapping[str, float], other: Mapping[str, float]) -> bool:
    """``values`` read exactly as ``other``: equal, key by key in the same order, each value of the same type (an
    int is equal to its float, and a dict to the same keys in another order, but neither reads the same)."""
    if values is other:
        return True
    if len(values) != len(other) or values != other:
        return False
    return all(
        key == other_key and type(value) is type(other_value)
        for (key, value), (other_key, other_value) in zip(values.items(), other.items(), strict=True)
    )
