"""Row counts against the last run and against the counts before the last revision change (Scenario 3)."""

from __future__ import annotations

import os
from pathlib import Path

from rollbackd.metrics import Metrics
from rollbackd.probes import ProbeContext
from rollbackd.probes.rows import RowsProbe, drop_ratio
from tests.probes.example_app import VbrpgApp
from tests.probes.game_database import execute, make_game_database
from tests.probes.probe_support import run_once, service_config


def rows_probe(tmp_path: Path, context: ProbeContext, database: Path) -> RowsProbe:
    return RowsProbe(service_config(tmp_path, database=database), context)


def test_drop_ratio() -> None:
    assert drop_ratio(200, 50) == 0.75
    assert drop_ratio(200, 300) == 0.0
    assert drop_ratio(None, 5) == 0.0
    assert drop_ratio(0, 0) == 0.0
    assert drop_ratio(10, None) == 0.0


def test_counts_the_runbooks_tables(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db", rooms=30)
    observation = run_once(rows_probe(tmp_path, context, database))
    assert observation.ok
    assert observation.detail["counts"] == {"game_rooms": 30, "players": 30, "game_room_participants": 30}
    assert observation.values["players:rows"] == 30
    assert observation.values["drop_ratio_since_revision_change"] == 0


def test_rows_lost_across_a_revision_change_are_measured_against_the_counts_before_it(
    tmp_path: Path, context: ProbeContext
) -> None:
    database = make_game_database(tmp_path / "vbrpg.db", rooms=40, revision="e6093b7a4c18")
    run_once(rows_probe(tmp_path, context, database))
    execute(
        database,
        "DELETE FROM game_room_participants WHERE room_id > 10",
        "DELETE FROM game_rooms WHERE id > 10",
        "UPDATE alembic_version SET version_num = '8e4b6c2d0a91'",
    )
    # A new probe object: the baseline survives a daemon restart (rows.json in the state dir).
    after = run_once(rows_probe(tmp_path, context, database))
    assert after.ok  # a drop is a fact for the policy, not a probe failure
    assert after.detail["baseline_revision"] == "e6093b7a4c18"
    assert after.detail["baseline"]["game_rooms"] == 40
    assert after.detail["counts"]["game_rooms"] == 10
    assert after.values["game_rooms:drop_ratio_since_revision_change"] == 0.75
    assert after.values["players:drop_ratio_since_revision_change"] == 0
    assert after.values["drop_ratio_since_revision_change"] == 0.75
    later = run_once(rows_probe(tmp_path, context, database))
    assert later.values["game_rooms:drop_ratio_since_previous"] == 0  # nothing new lost since the last run
    assert later.values["drop_ratio_since_revision_change"] == 0.75  # still measured against the old revision


def test_deletes_without_a_revision_change_are_only_a_drop_since_previous(
    tmp_path: Path, context: ProbeContext
) -> None:
    database = make_game_database(tmp_path / "vbrpg.db", rooms=20)
    probe = rows_probe(tmp_path, context, database)
    run_once(probe)
    execute(database, "DELETE FROM game_room_participants WHERE room_id > 15")
    observation = run_once(probe)
    assert observation.values["game_room_participants:drop_ratio_since_previous"] == 0.25
    assert observation.values["drop_ratio_since_revision_change"] == 0
    assert observation.detail["previous"]["game_room_participants"] == 20


def test_a_vanished_table_fails_the_probe(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db")
    probe = rows_probe(tmp_path, context, database)
    run_once(probe)
    execute(database, "DROP TABLE game_room_participants")
    observation = run_once(probe)
    assert not observation.ok
    assert observation.reason == "table_missing"
    assert observation.detail["vanished"] == ["game_room_participants"]


def test_a_table_never_seen_is_reported_absent_not_vanished(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db")
    execute(database, "DROP TABLE game_room_participants")
    observation = run_once(rows_probe(tmp_path, context, database))
    assert observation.ok
    assert observation.detail["absent"] == ["game_room_participants"]


def test_missing_database_is_unavailable(tmp_path: Path, context: ProbeContext) -> None:
    observation = run_once(rows_probe(tmp_path, context, tmp_path / "nope.db"))
    assert (observation.ok, observation.reason) == (False, "unavailable")


def test_exports_table_rows(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db", rooms=7)
    probe = rows_probe(tmp_path, context, database)
    metrics = Metrics()
    probe.export(metrics, run_once(probe))
    assert metrics.registry.get_sample_value("rollbackd_table_rows", {"service": "vbrpg", "table": "players"}) == 7


def test_data_loss_fault_is_measured_against_the_rows_before_the_migration(
    tmp_path: Path, context: ProbeContext, vbrpg_app: VbrpgApp
) -> None:
    probe = rows_probe(tmp_path, context, vbrpg_app.database)
    before = run_once(probe)
    vbrpg_app.fault("data-loss")
    after = run_once(probe)
    assert before.detail["counts"] == {"game_rooms": 20, "players": 40, "game_room_participants": 40}
    assert after.detail["revision"] == "8e4b6c2d0a91"
    assert after.detail["baseline_revision"] == "e6093b7a4c18"
    assert after.detail["baseline"] == before.detail["counts"]
    assert after.detail["counts"] == {"game_rooms": 0, "players": 0, "game_room_participants": 0}
    assert after.values["drop_ratio_since_revision_change"] == 1.0
    assert after.values["game_rooms:drop_ratio_since_revision_change"] == 1.0


def without_skip_note(detail: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in detail.items() if key != "skipped"}


def test_an_unchanged_database_is_not_counted_again_and_reports_the_same(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db", rooms=30)
    probe = rows_probe(tmp_path, context, database)
    first, second = run_once(probe), run_once(probe)
    assert "skipped" not in first.detail
    assert "data_version" in str(second.detail["skipped"])
    assert (second.ok, second.reason, second.values) == (first.ok, first.reason, first.values)
    assert without_skip_note(second.detail) == {**first.detail, "previous": first.detail["counts"]}


def test_a_write_by_another_connection_is_counted_at_the_next_run(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db", rooms=30)
    probe = rows_probe(tmp_path, context, database)
    run_once(probe)
    assert "skipped" in run_once(probe).detail
    execute(database, "DELETE FROM players WHERE id > 20")
    after = run_once(probe)
    assert "skipped" not in after.detail
    assert after.detail["counts"]["players"] == 20
    assert after.values["players:drop_ratio_since_previous"] == 10 / 30


def test_a_database_replaced_by_a_file_of_the_same_size_and_mtime_is_counted(
    tmp_path: Path, context: ProbeContext
) -> None:
    """A restore renames another file into place: only its inode (and the new connection) tells."""
    database = make_game_database(tmp_path / "vbrpg.db", rooms=30, mode="delete")
    replacement = make_game_database(tmp_path / "backup.db", rooms=30, mode="delete")
    execute(replacement, "DELETE FROM game_rooms WHERE id > 5")  # a delete keeps the file's size
    probe = rows_probe(tmp_path, context, database)
    run_once(probe)
    before = os.stat(database)
    assert os.stat(replacement).st_size == before.st_size
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, database)
    after = run_once(probe)
    assert "skipped" not in after.detail
    assert after.detail["counts"]["game_rooms"] == 5
