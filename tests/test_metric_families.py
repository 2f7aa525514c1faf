"""The plain-data families export exactly what prometheus_client's own metrics export for the same writes."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rollbackd.metric_families import CounterFamily, GaugeFamily, HistogramFamily

BOUNDS = (0.01, 0.1, 1, 10)
WRITES = (0.0, 0.005, 0.01, 0.5, 3, 10, 99, 1e-9)


def exposition(registry: CollectorRegistry) -> list[str]:
    """/metrics as lines, each ``_created`` value cut off (they are the time each series was made)."""
    lines = generate_latest(registry).decode().splitlines()
    return [line.rsplit(" ", 1)[0] if "_created" in line else line for line in lines]


def test_gauges_counters_and_histograms_expose_what_prometheus_client_does() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    gauge = Gauge("t_gauge", "A gauge.", ["service", "probe"], registry=theirs)
    counter = Counter("t_events", "A counter.", ["service"], registry=theirs)
    histogram = Histogram("t_seconds", "A histogram.", ["service"], buckets=BOUNDS, registry=theirs)
    plain_gauge = GaugeFamily("t_gauge", "A gauge.", ["service", "probe"], registry=ours)
    plain_counter = CounterFamily("t_events", "A counter.", ["service"], registry=ours)
    plain_histogram = HistogramFamily("t_seconds", "A histogram.", ["service"], bounds=BOUNDS, registry=ours)
    for service in ("b", "a"):  # series in the order they were first used, as prometheus_client keeps them
        for value in WRITES:
            gauge.labels(service=service, probe="p").set(value)
            plain_gauge.labels(service=service, probe="p").set(value)
            counter.labels(service).inc(value)
            plain_counter.labels(service).inc(value)
            histogram.labels(service=service).observe(value)
            plain_histogram.labels(service=service).observe(value)
        gauge.labels(service=service, probe="q").inc(2.5)
        plain_gauge.labels(service=service, probe="q").inc(2.5)
    assert exposition(ours) == exposition(theirs)
    gauge.remove("a", "p")
    plain_gauge.remove("a", "p")
    plain_counter.remove_where("service", "a")
    counter.remove("a")
    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("t_seconds_bucket", {"service": "b", "le": "1.0"}) == 5


def test_created_series_are_off_when_asked() -> None:
    registry = CollectorRegistry()
    CounterFamily("t_events", "A counter.", ["service"], registry=registry, created=False).labels("a").inc()
    HistogramFamily("t_seconds", "A histogram.", ["service"], bounds=BOUNDS, registry=registry, created=False).labels(
        "a"
    ).observe(1)
    text = generate_latest(registry).decode()
    assert "t_events_total" in text
    assert "_created" not in text


def test_a_family_refuses_what_prometheus_client_refuses() -> None:
    registry = CollectorRegistry()
    counter = CounterFamily("t_events", "A counter.", ["service"], registry=registry)
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("a").inc(-1)
    with pytest.raises(ValueError, match="labels"):
        counter.labels("a", "b")
    with pytest.raises(ValueError, match="Duplicated"):
        GaugeFamily("t_events_total", "Clashes with the counter's sample.", ["service"], registry=registry)
    with pytest.raises(ValueError, match="sorted"):
        HistogramFamily("t_seconds", "A histogram.", [], bounds=(1, 0.1), registry=registry)


def test_increments_from_threads_are_all_counted() -> None:
    counter = CounterFamily("t_events", "A counter.", ["service"], registry=CollectorRegistry())
    histogram = HistogramFamily("t_seconds", "A histogram.", ["service"], bounds=BOUNDS, registry=CollectorRegistry())

    def work() -> None:
        for _ in range(20000):
            counter.labels("a").inc()
            histogram.labels("a").observe(0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.labels("a").value == 80000
    assert histogram.labels("a").counts[BOUNDS.index(1)] == 80000
