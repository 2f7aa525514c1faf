"""Times as the CLI prints them: in every ``--json`` ISO 8601 with its offset and the epoch beside it as
``<key>_epoch``; in tables local time with the zone named, or UTC with ``--utc``; history cells cut with an
ellipsis and a note, whole with ``--full``. Real subprocesses against a real state DB, database and backup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from rollbackd.cli.times import with_iso_times
from rollbackd.state.history import History
from tests.backup.helpers import make_database, make_service

OPENED = 1796169346.25  # 2026-12-01T23:55:46.25+00:00
LONG_REASON = "health failing for 45s after the deploy of a1b2c3d4 (HTTP 503 from /health, 9 of 9 probes)"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A service with one backup and a state DB holding one recovered incident; yields the config path."""
    root = tmp_path_factory.mktemp("times")
    service = make_service(root)
    make_database(service.database)
    config = root / "rollbackd.toml"
    assert rollbackd(config, "backup").returncode == 0
    (root / "state").mkdir(exist_ok=True)
    clock = iter([OPENED, OPENED + 12.5])
    history = History(root / "state" / "rollbackd.db", clock=lambda: next(clock))
    try:
        history.upgrade()
        incident = history.open_incident("vbrpg", "health-failing", "health", LONG_REASON, {})
        history.close_incident(incident, "recovered", backup_used="vbrpg_20261201_235500.db")
    finally:
        history.close()
    yield config


def rollbackd(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", "--config", str(config), *args],
        capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip


def in_zone(zone: str) -> dict[str, str]:
    return {**os.environ, "TZ": zone}


def json_of(config: Path, *args: str) -> Any:
    result = rollbackd(config, *args, "--json")
    assert result.returncode in (0, 4), result.stderr
    return json.loads(result.stdout)


def assert_iso_with_epoch(entry: dict[str, Any], key: str) -> datetime:
    moment = datetime.fromisoformat(entry[key])
    assert moment.utcoffset() is not None and moment.utcoffset().total_seconds() == 0, entry[key]
    assert entry[key].endswith("+00:00") and "." not in entry[key]
    assert isinstance(entry[f"{key}_epoch"], float)
    assert abs(moment.timestamp() - entry[f"{key}_epoch"]) < 1
    return moment


def test_history_json_dates_are_iso_with_the_epoch_beside(installed: Path) -> None:
    [row] = json_of(installed, "history")
    assert row["date"] == "2026-12-01T23:55:46+00:00"
    assert row["date_epoch"] == OPENED
    assert row["time_to_recover"] == 12.5  # a duration stays seconds


def test_status_json_without_a_daemon_uses_the_same_format(installed: Path) -> None:
    status = json_of(installed, "status")
    [incident] = status["services"]["vbrpg"]["incidents"]
    assert incident["date"] == "2026-12-01T23:55:46+00:00" and incident["date_epoch"] == OPENED


def test_backups_json_created_at_is_iso_to_the_second_with_the_epoch(installed: Path) -> None:
    [entry] = json_of(installed, "backups", "list")["backups"]
    created = assert_iso_with_epoch(entry, "created_at")
    assert_iso_with_epoch(entry["manifest"], "created_at")  # the manifest's own ISO, to the second too
    assert entry["name"].endswith(created.strftime("%Y%m%d_%H%M%S.db"))


def test_probe_values_stay_raw_numbers_while_started_at_is_iso() -> None:
    observation = {"probe": "process", "started_at": OPENED, "duration": 0.012, "values": {"start_time": OPENED}}
    shown = with_iso_times(observation)
    assert shown["started_at"] == "2026-12-01T23:55:46+00:00" and shown["started_at_epoch"] == OPENED
    assert shown["values"] == {"start_time": OPENED} and shown["duration"] == 0.012


def test_text_and_none_under_a_moment_key_are_left_alone() -> None:
    assert with_iso_times({"at": None, "closed_at": "never", "ok": True}) == {
        "at": None,
        "closed_at": "never",
        "ok": True,
    }


def test_history_table_is_in_local_time_and_names_the_zone(installed: Path) -> None:
    berlin = rollbackd(installed, "history", env=in_zone("Europe/Berlin"))
    assert berlin.returncode == 0, berlin.stderr
    assert "2026-12-02 00:55 CET" in berlin.stdout
    for utc in (
        rollbackd(installed, "history", "--utc", env=in_zone("Europe/Berlin")),
        rollbackd(installed, "--utc", "history", env=in_zone("Europe/Berlin")),
    ):
        assert "2026-12-01 23:55 UTC" in utc.stdout and "CET" not in utc.stdout


def test_history_cuts_a_long_reason_with_an_ellipsis_and_says_how_to_see_it(installed: Path) -> None:
    table = rollbackd(installed, "history").stdout
    assert LONG_REASON not in table
    assert LONG_REASON[:59] + "…" in table
    assert "rollbackd history --full" in table
    for flag in ("--full", "-l"):
        whole = rollbackd(installed, "history", flag).stdout
        assert LONG_REASON in whole and "…" not in whole
    assert LONG_REASON in rollbackd(installed, "history", "--markdown").stdout


def test_backups_and_status_tables_name_the_zone(installed: Path) -> None:
    listed = rollbackd(installed, "backups", env=in_zone("America/New_York")).stdout
    assert " EST " in listed and "UTC" not in listed
    status = rollbackd(installed, "status", env=in_zone("Asia/Kolkata"))
    assert "2026-12-02 05:25 IST" in status.stdout, status.stdout
    assert "2026-12-01 23:55 UTC" in rollbackd(installed, "status", "--utc", env=in_zone("Asia/Kolkata")).stdout
