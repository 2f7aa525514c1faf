"""Labelled Prometheus metrics kept as plain numbers: one collector per family, no metric object per series.

prometheus_client's ``Gauge``/``Counter``/``Histogram`` make each labelled series a full metric object with a
value object and a lock per value (per bucket for a histogram): 0.6-0.7 KiB per gauge or counter series and
3.3-4.5 KiB per histogram series: 98 KiB for one service's ~320 samples, 21 KiB here (bench/metrics_cost.py,
bench/RESULTS.md "Issue 13, mem20"). Here a series is a small slotted object in its family's dict, and
``collect()`` yields the same samples in the same order as prometheus_client would: names, labels, values, HELP
and TYPE are identical on /metrics.

Writers are the event loop and worker threads; one lock per family guards the read-modify-write of ``inc`` and
``observe`` and the copy ``collect`` takes (``set`` is a single store).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import INF, floatToGoString

SeriesT = TypeVar("SeriesT", bound="_Series")


class _Series:
    __slots__ = ("_family",)

    def __init__(self, family: Family[_Series]) -> None:
        self._family = family


class GaugeSeries(_Series):
    __slots__ = ("value",)

    def __init__(self, family: Family[GaugeSeries]) -> None:
        super().__init__(family)  # type: ignore[arg-type]  # the family of this very series type
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1) -> None:
        with self._family.lock:
            self.value += amount


class CounterSeries(_Series):
    __slots__ = ("created", "value")

    def __init__(self, family: Family[CounterSeries]) -> None:
        super().__init__(family)  # type: ignore[arg-type]  # the family of this very series type
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        with self._family.lock:
            self.value += amount


class HistogramSeries(_Series):
    __slots__ = ("counts", "created", "sum")

    def __init__(self, family: Family[HistogramSeries]) -> None:
        super().__init__(family)  # type: ignore[arg-type]  # the family of this very series type
        self.created = time.time()
        self.counts = [0.0] * len(family.bounds)  # per bucket, not cumulative (as prometheus_client keeps them)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        bounds = self._family.bounds
        with self._family.lock:
            self.sum += amount
            for index, bound in enumerate(bounds):
                if amount <= bound:
                    self.counts[index] += 1
                    break


class Family(Generic[SeriesT]):
    """One metric family and its labelled series, registered as a collector on ``registry``. ``created`` says
    whether the counter and histogram series export ``_created`` (prometheus_client's process-wide switch,
    passed in here)."""

    kind = ""
    series_type: type[_Series] = _Series

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry,
        created: bool = True,
        bounds: Sequence[float] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.created = created
        self.bounds = tuple(float(bound) for bound in bounds)
        self.lock = threading.Lock()
        self._series: dict[tuple[str, ...], SeriesT] = {}
        registry.register(self)

    def labels(self, *values: object, **labels: object) -> SeriesT:
        """The series of these label values (by position or name), created at 0 on first use. A dict lookup
        when the values are strings (every caller's case): exports call this on every probe run."""
        names = self.labelnames
        if labels:
            try:
                key = tuple([labels[name] for name in names])
            except KeyError:
                key = ()
            if values or len(labels) != len(names) or len(key) != len(names):
                raise ValueError(f"{self.name}: labels are {names}, got {values or labels}")
        elif len(values) == len(names):
            key = values
        else:
            raise ValueError(f"{self.name}: labels are {names}, got {values}")
        series = self._series.get(key)  # type: ignore[arg-type]  # a key of non-strings finds nothing here
        if series is None:
            key = tuple(str(value) for value in key)
            with self.lock:
                series = self._series.setdefault(key, self.series_type(self))  # type: ignore[arg-type]
        return series

    def remove(self, *values: object) -> None:
        with self.lock:
            self._series.pop(tuple(str(value) for value in values), None)

    def remove_where(self, labelname: str, value: str) -> None:
        """Remove every series whose ``labelname`` is ``value`` (a service that left the config)."""
        position = self.labelnames.index(labelname)
        with self.lock:
            for key in [key for key in self._series if key[position] == value]:
                del self._series[key]

    def describe(self) -> list[Metric]:
        """The family without samples: lets the registry refuse a second family of the same name."""
        return [Metric(self.name, self.documentation, self.kind)]

    def collect(self) -> list[Metric]:
        family = Metric(self.name, self.documentation, self.kind)
        with self.lock:
            series = [(key, self._sample_values(item)) for key, item in self._series.items()]
        for key, samples in series:
            labels = dict(zip(self.labelnames, key, strict=True))
            for suffix, extra, value in samples:
                family.add_sample(self.name + suffix, {**labels, **extra} if extra else dict(labels), value)
        return [family]

    def _sample_values(self, series: SeriesT) -> list[tuple[str, dict[str, str], float]]:
        raise NotImplementedError


class GaugeFamily(Family[GaugeSeries]):
    kind = "gauge"
    series_type = GaugeSeries

    def _sample_values(self, series: GaugeSeries) -> list[tuple[str, dict[str, str], float]]:
        return [("", {}, series.value)]


class CounterFamily(Family[CounterSeries]):
    """A counter, named without ``_total`` as prometheus_client names its family; samples get the suffix."""

    kind = "counter"
    series_type = CounterSeries

    def _sample_values(self, series: CounterSeries) -> list[tuple[str, dict[str, str], float]]:
        samples: list[tuple[str, dict[str, str], float]] = [("_total", {}, series.value)]
        if self.created:
            samples.append(("_created", {}, series.created))
        return samples


class HistogramFamily(Family[HistogramSeries]):
    """A histogram on ``bounds`` (+Inf added, as prometheus_client adds it)."""

    kind = "histogram"
    series_type = HistogramSeries

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry,
        bounds: Sequence[float],
        created: bool = True,
    ) -> None:
        bounds = [float(bound) for bound in bounds]
        if bounds != sorted(bounds) or not bounds:
            raise ValueError(f"{name}: buckets not in sorted order")
        if bounds[-1] != INF:
            bounds.append(INF)
        self._le = tuple(floatToGoString(bound) for bound in bounds)  # type: ignore[no-untyped-call]  # unannotated
        super().__init__(name, documentation, labelnames, registry=registry, created=created, bounds=bounds)

    def _sample_values(self, series: HistogramSeries) -> list[tuple[str, dict[str, str], float]]:
        samples: list[tuple[str, dict[str, str], float]] = []
        total = 0.0
        for le, count in zip(self._le, series.counts, strict=True):
            total += count
            samples.append(("_bucket", {"le": le}, total))
        samples.append(("_count", {}, total))
        if self.bounds[0] >= 0:
            samples.append(("_sum", {}, series.sum))
        if self.created:
            samples.append(("_created", {}, series.created))
        return samples
