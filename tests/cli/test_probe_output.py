"""`rollbackd probe` for a person: sizes in MiB, durations in ms, the process start as a time with its zone; the
JSON keeps the raw numbers. A real process (its pid in a pid file), a real SQLite file, a real subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollbackd.cli.run import human_value
from rollbackd.cli.status import wal_line
from tests.backup.helpers import make_database, make_service

PROBES = """
[service.probes.health]
enabled = false
[service.probes.latency]
enabled = false
[service.probes.schema]
enabled = false
[service.probes.rows]
enabled = false
[service.probes.process]
pidfile = "{pidfile}"
"""


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A config whose process probe watches a real `sleep` through a pid file; yields the config path."""
    root = tmp_path_factory.mktemp("probe")
    sleeper = subprocess.Popen(["sleep", "300"])  # noqa: S607 - coreutils on PATH
    try:
        (root / "app.pid").write_text(f"{sleeper.pid}\n")
        service = make_service(root, extra=PROBES.format(pidfile=root / "app.pid"))
        make_database(service.database)
        yield root / "rollbackd.toml"
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


def probe(config: Path, *args: str, zone: str = "UTC") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", "--config", str(config), "probe", *args],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "TZ": zone},
    )  # fmt: skip


def test_probe_prints_human_units(watched: Path) -> None:
    result = probe(watched)
    assert result.returncode == 0, result.stdout + result.stderr
    process = next(line for line in result.stdout.splitlines() if " process " in line)
    assert re.search(r"\brss=\d+\.\d (KiB|MiB)\b", process), process
    assert re.search(r"\bstart_time=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\b", process), process
    assert re.search(r"\bcpu_ratio=\d+\.\d%", process), process
    assert "rss_bytes" not in process and "e+09" not in process
    lock = next(line for line in result.stdout.splitlines() if " sqlite_lock " in line)
    assert re.search(r"\bdatabase_size=\d+(\.\d)? (B|KiB|MiB)\b", lock), lock
    assert re.search(r"\bheld_seconds=0 s\b", lock), lock
    assert re.search(r"\d+(\.\d)? (µs|ms|s) ", lock), lock  # how long the probe took


def test_probe_start_time_is_local_with_its_zone_unless_utc(watched: Path) -> None:
    local = probe(watched, zone="Europe/Berlin").stdout
    assert re.search(r"start_time=\S+ \S+ CET\b", local), local
    assert re.search(r"start_time=\S+ \S+ UTC\b", probe(watched, "--utc", zone="Europe/Berlin").stdout)


def test_probe_json_keeps_the_raw_numbers(watched: Path) -> None:
    result = probe(watched, "--json")
    observations = {entry["probe"]: entry for entry in json.loads(result.stdout)}
    values = observations["process"]["values"]
    assert isinstance(values["rss_bytes"], float) and values["rss_bytes"] > 1024
    assert isinstance(values["start_time"], float)
    assert isinstance(observations["process"]["duration"], float)
    assert observations["process"]["started_at"].endswith("+00:00")


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("rss_bytes", 84475904.0, "rss=80.6 MiB"),
        ("/health:latency", 0.0123, "/health:latency=12 ms"),
        ("p99", 1.5, "p99=1.5 s"),
        ("lag_seconds", 125.0, "lag_seconds=2m5s"),
        ("error_ratio", 0.25, "error_ratio=25.0%"),
        ("players:drop_ratio_since_previous", 0.5, "players:drop_ratio_since_previous=50.0%"),
        ("pid", 4242.0, "pid=4242"),
        ("start_time", 1796169002.0, "start_time=2026-12-01 23:50:02 UTC"),
    ],
)
def test_each_value_is_shown_in_the_unit_its_name_says(key: str, value: float, shown: str) -> None:
    assert human_value(key, value, utc=True) == shown


def test_status_gives_the_wal_in_human_units_and_names_its_long_reader() -> None:
    line = wal_line({"size_bytes": 160712, "database_bytes": 803560, "readers": [{"pid": 4242, "name": "python3"}]})
    assert line.startswith("156.9 KiB (0.2× the database)"), line
    assert "pid 4242 (python3)" in line
