"""`rollbackd restore --from-replica` by hand, on the real example service: the same safety as every restore
(service lock, the current file kept, verification, a history record), and a dry run that touches nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from rollbackd.config.model import ServiceConfig, parse_config
from rollbackd.state.history import History
from rollbackd.state.state_dir import StateDir
from tests.backup.helpers import (
    ExampleApp,
    example_available,
    make_database,
    make_example_app,
    make_service,
    rollbackd,
    service_toml,
)
from tests.backup.test_restore import marker_control

from .litestream_child import LitestreamChild, players


@pytest.fixture
def example(tmp_path: Path) -> Iterator[ExampleApp]:
    if not example_available():
        pytest.fail("vbrpg-example is not installed: pip install -e examples/vbrpg")
    app = make_example_app(tmp_path)
    yield app
    app.stop()


def replicated_example(tmp_path: Path, example: ExampleApp) -> ServiceConfig:
    replication = f'replication = {{ replicas = [{{ type = "file", path = "{tmp_path / "offsite"}" }}] }}'
    text = service_toml(tmp_path, control=example.control_toml(), extra=replication)
    text = text.replace("http://127.0.0.1:8000", example.base_url)
    (tmp_path / "rollbackd.toml").write_text(text)
    return parse_config(text, tmp_path / "rollbackd.toml").service[0]


def new_player_room(example: ExampleApp, host: str) -> str:
    created = httpx.post(f"{example.base_url}/api/rooms", json={"name": host, "host_name": host}, timeout=10)
    assert created.status_code == 201, created.text
    return str(created.json()["code"])


@pytest.mark.e2e
def test_restore_from_replica_by_hand_keeps_the_file_verifies_and_records_it(
    tmp_path: Path, example: ExampleApp
) -> None:
    service = replicated_example(tmp_path, example)
    example.cli(*example.start_argv()[1:])
    child = LitestreamChild(service, StateDir(tmp_path / "state"), tmp_path / "litestream.log")
    child.start()
    try:
        new_player_room(example, "kept-host")
        child.wait_replicated(tmp_path, "kept-host")
        point = datetime.now(UTC).isoformat()
        late = new_player_room(example, "late-host")
        child.wait_replicated(tmp_path, "late-host")
    finally:
        child.stop()  # no daemon runs: nothing replicates while the operator restores
    config = tmp_path / "rollbackd.toml"
    before = service.database.read_bytes()

    planned = rollbackd(config, "restore", "--from-replica", "--timestamp", point, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "litestream restore the database as at" in planned.stdout and "pause replication" in planned.stdout
    assert service.database.read_bytes() == before

    result = rollbackd(config, "restore", "--from-replica", "--timestamp", point, "--yes", "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True, report
    assert "kept-host" in players(service.database) and "late-host" not in players(service.database)
    assert httpx.get(f"{example.base_url}/api/rooms/{late}", timeout=10).status_code == 404
    history = History(StateDir(tmp_path / "state").history_db)
    try:
        incident = history.incident(report["incident"])
        [action] = incident.actions
        assert incident.outcome == "recovered" and not incident.automatic
        assert action.detail["source"] == "replica" and action.detail["point"].startswith(point[:19])
        assert incident.backup_used is not None and incident.backup_used.startswith("vbrpg_backup_")
        assert any("vbrpg_corrupted_" in path for path in action.detail["restore"]["quarantined"])
    finally:
        history.close()


def test_from_replica_needs_replication_and_a_valid_moment(tmp_path: Path) -> None:
    (tmp_path / "rollbackd.toml").write_text(service_toml(tmp_path))
    config = tmp_path / "rollbackd.toml"
    no_replica = rollbackd(config, "restore", "--from-replica", "--dry-run")
    assert no_replica.returncode == 2 and "no [service.replication]" in no_replica.stderr
    alone = rollbackd(config, "restore", "--timestamp", "2026-01-01T00:00:00Z", "--dry-run")
    assert alone.returncode == 2 and "go with --from-replica" in alone.stderr
    both = rollbackd(config, "restore", "--from-replica", "--timestamp", "x", "--before-incident", "1")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


@pytest.mark.e2e
def test_before_incident_plans_the_moment_the_database_was_last_proven_good(tmp_path: Path) -> None:
    replication = f'replication = {{ replicas = [{{ type = "file", path = "{tmp_path / "offsite"}" }}] }}'
    service = make_service(tmp_path, control=marker_control(tmp_path), extra=replication)
    make_database(service.database, players=3)
    state_dir = StateDir(tmp_path / "state")
    state_dir.ensure()
    child = LitestreamChild(service, state_dir, tmp_path / "litestream.log")
    child.start()
    try:
        child.wait_replicated(tmp_path, "player-3")
    finally:
        child.stop()
    proven = datetime.now(UTC).timestamp()
    history = History(state_dir.history_db)
    history.upgrade()
    try:
        incident = history.open_incident(
            "vbrpg", "integrity-failed", "integrity_failed", "corrupt", {"proven_good_at": proven, "rows_before": {}}
        )
    finally:
        history.close()
    config = tmp_path / "rollbackd.toml"

    planned = rollbackd(config, "restore", "--from-replica", "--before-incident", str(incident), "--dry-run")

    assert planned.returncode == 0, planned.stderr
    moment = datetime.fromtimestamp(proven, UTC).isoformat(timespec="milliseconds")
    assert f"as at {moment} (the newest passing integrity/foreign-key check" in planned.stdout, planned.stdout
    unknown = rollbackd(config, "restore", "--from-replica", "--before-incident", "999", "--dry-run")
    assert unknown.returncode == 2 and "no incident 999" in unknown.stderr
