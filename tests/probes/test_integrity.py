"""quick_check / integrity_check / foreign_key_check and vanished indexes, on real damaged SQLite files."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from rollbackd.metrics import Metrics
from rollbackd.probes import ProbeContext
from rollbackd.probes.integrity import IntegrityProbe
from tests.probes.example_app import VbrpgApp
from tests.probes.game_database import execute, make_game_database
from tests.probes.probe_support import run_once, service_config


def integrity_probe(tmp_path: Path, context: ProbeContext, database: Path, extra: str = "") -> IntegrityProbe:
    return IntegrityProbe(service_config(tmp_path, database=database, extra=extra), context)


def test_healthy_database_passes_and_the_first_run_is_a_full_check(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db")
    probe = integrity_probe(tmp_path, context, database)
    first = run_once(probe)
    execute(database, "UPDATE players SET name = 'renamed' WHERE id = 1")  # so the next one runs, not skipped
    second = run_once(probe)
    assert first.ok, first
    assert second.ok, second
    assert first.detail["check"] == "full"
    assert second.detail["check"] == "quick"  # full_every (6h) has not passed since
    assert second.detail["revision"] == "7b15d08e3f62"
    assert second.values["database_size_bytes"] == os.stat(database).st_size


def test_full_check_comes_back_after_full_every(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db")
    now = [1000.0]
    probe = integrity_probe(
        tmp_path,
        dataclasses.replace(context, clock=lambda: now[0]),
        database,
        extra='[service.probes.integrity]\nquick_every = "1m"\nfull_every = "1h"',
    )
    kinds = []
    for step in (0, 60, 3000, 600):
        now[0] += step
        kinds.append(run_once(probe).detail["check"])
    assert kinds == ["full", "skipped", "skipped", "full"]  # unchanged: no quick check, the full one still runs


def test_an_unchanged_database_is_not_checked_again(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db")
    probe = integrity_probe(tmp_path, context, database)
    first = run_once(probe)
    second = run_once(probe)
    assert first.ok and first.detail["check"] == "full", first
    assert second.ok, second
    assert second.detail["check"] == "skipped"
    assert "data_version" in second.detail["skipped"]
    assert second.values["errors"] == 0 and second.detail["revision"] == "7b15d08e3f62"


def test_a_change_committed_after_a_passing_check_is_checked(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db")
    probe = integrity_probe(tmp_path, context, database)
    assert run_once(probe).ok
    execute(database, "INSERT INTO game_room_participants (id, room_id, player_id) VALUES (9001, 424242, 1)")
    after = run_once(probe)
    assert after.detail["check"] == "quick"
    assert (after.ok, after.reason) == (False, "foreign_key_violation")
    again = run_once(probe)  # a failing result is never the base of a skip
    assert again.detail["check"] == "quick" and not again.ok


def test_corruption_written_behind_sqlites_back_with_a_new_mtime_is_caught(
    tmp_path: Path, context: ProbeContext
) -> None:
    database = make_game_database(tmp_path / "vbrpg.db", rooms=400, mode="delete")
    probe = integrity_probe(tmp_path, context, database)
    assert run_once(probe).ok
    assert run_once(probe).detail["check"] == "skipped"
    before = os.stat(database)
    with database.open("r+b") as handle:  # same size, data_version untouched: only the mtime tells
        for page in (4, 6, 8):
            handle.seek((page - 1) * 4096)
            handle.write(b"\xff" * 4096)
    os.utime(database, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert os.stat(database).st_size == before.st_size
    observation = run_once(probe)
    assert observation.detail["check"] == "quick"
    assert (observation.ok, observation.reason) == (False, "corrupt")


def test_byte_corrupted_copy_is_reported_corrupt(tmp_path: Path, context: ProbeContext) -> None:
    original = make_game_database(tmp_path / "original.db", rooms=400, mode="delete")
    database = tmp_path / "vbrpg.db"
    shutil.copyfile(original, database)
    page_size = 4096
    with database.open("r+b") as handle:
        for page in (4, 6, 8):  # whole b-tree pages of the tables, header page left alone
            handle.seek((page - 1) * page_size)
            handle.write(b"\xff" * page_size)
    observation = run_once(integrity_probe(tmp_path, context, database))
    assert not observation.ok
    assert observation.reason == "corrupt"
    assert observation.detail.get("errors") or "malformed" in str(observation.detail.get("error"))


def test_check_past_its_timeout_is_aborted(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db", rooms=20000)
    extra = '[service.probes.integrity]\ntimeout = "1ms"'
    observation = run_once(integrity_probe(tmp_path, context, database, extra))
    assert (observation.ok, observation.reason) == (False, "timeout")


def test_not_a_database(tmp_path: Path, context: ProbeContext) -> None:
    database = tmp_path / "vbrpg.db"
    database.write_bytes(b"this is not sqlite at all" * 200)
    observation = run_once(integrity_probe(tmp_path, context, database))
    assert (observation.ok, observation.reason) == (False, "not_a_database")


def test_a_database_never_seen_is_unavailable_and_one_checked_before_then_gone_is_missing(
    tmp_path: Path, context: ProbeContext
) -> None:
    never = run_once(integrity_probe(tmp_path, context, tmp_path / "gone.db"))
    assert (never.ok, never.reason) == (False, "unavailable")  # a service not set up yet: nothing to restore
    database = make_game_database(tmp_path / "vbrpg.db")
    assert run_once(integrity_probe(tmp_path, context, database)).ok
    database.unlink()  # a lost disk or a wiped data dir: the database-missing rule restores it
    gone = run_once(integrity_probe(tmp_path, context, database))
    assert (gone.ok, gone.reason) == (False, "missing")
    assert not database.exists()  # the probe never creates it


def test_foreign_key_violation_inserted_with_fks_off_is_named(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db")
    execute(database, "INSERT INTO game_room_participants (id, room_id, player_id) VALUES (9001, 424242, 1)")
    observation = run_once(integrity_probe(tmp_path, context, database))
    assert not observation.ok
    assert observation.reason == "foreign_key_violation"
    assert observation.values["foreign_key_violations"] == 1
    assert observation.detail["foreign_key_violations"] == [
        {"table": "game_room_participants", "rowid": 9001, "parent": "game_rooms"}
    ]


def test_index_dropped_by_a_revision_change_is_named(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db", revision="7b15d08e3f62")
    probe = integrity_probe(tmp_path, context, database)
    before = run_once(probe)
    execute(
        database,
        "DROP INDEX ix_game_room_participants_room_id",
        "UPDATE alembic_version SET version_num = '2d6f8a0c4e19'",
    )
    after = run_once(probe)
    assert before.ok
    assert not after.ok
    assert after.reason == "missing_index"
    assert after.detail["missing_indexes"] == ["ix_game_room_participants_room_id"]
    assert after.detail["missing_vs_previous_revision"] == ["ix_game_room_participants_room_id"]
    learned = json.loads((tmp_path / "state" / "services" / "vbrpg" / "indexes.json").read_text())
    assert learned["previous_revision"] == "7b15d08e3f62"
    assert learned["indexes"]["7b15d08e3f62"] == ["ix_game_room_participants_room_id"]
    assert learned["indexes"]["2d6f8a0c4e19"] == []


def test_downgrade_that_restores_the_index_clears_it(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db", revision="7b15d08e3f62")
    probe = integrity_probe(tmp_path, context, database)
    run_once(probe)
    execute(database, "DROP INDEX ix_game_room_participants_room_id", "UPDATE alembic_version SET version_num = 'bad1'")
    assert run_once(probe).reason == "missing_index"
    execute(
        database,
        "CREATE INDEX ix_game_room_participants_room_id ON game_room_participants (room_id)",
        "UPDATE alembic_version SET version_num = '7b15d08e3f62'",
    )
    assert run_once(probe).ok


def test_configured_expected_index_is_checked_from_the_first_run(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db")
    extra = '[service.probes.integrity]\nexpected_indexes = ["ix_game_room_participants_room_id", "ix_rooms_code"]'
    observation = run_once(integrity_probe(tmp_path, context, database, extra))
    assert observation.reason == "missing_index"
    assert observation.detail["missing_configured"] == ["ix_rooms_code"]


def test_exports_check_results(tmp_path: Path, context: ProbeContext) -> None:
    database = make_game_database(tmp_path / "vbrpg.db")
    execute(database, "INSERT INTO game_room_participants (id, room_id, player_id) VALUES (9001, 424242, 1)")
    probe = integrity_probe(tmp_path, context, database)
    metrics = Metrics()
    probe.export(metrics, run_once(probe))
    sample = metrics.registry.get_sample_value
    assert sample("rollbackd_sqlite_check_ok", {"service": "vbrpg", "check": "full"}) == 1
    assert sample("rollbackd_sqlite_check_ok", {"service": "vbrpg", "check": "foreign_keys"}) == 0
    assert sample("rollbackd_sqlite_missing_indexes", {"service": "vbrpg"}) == 0


def test_drop_index_fault_names_the_missing_index(tmp_path: Path, context: ProbeContext, vbrpg_app: VbrpgApp) -> None:
    probe = integrity_probe(tmp_path, context, vbrpg_app.database)
    before = run_once(probe)
    vbrpg_app.fault("drop-index")
    after = run_once(probe)
    assert before.ok, before
    assert (after.ok, after.reason) == (False, "missing_index")
    assert after.detail["missing_vs_previous_revision"] == ["ix_game_room_participants_room_id"]
    assert after.detail["revision"] == "2d6f8a0c4e19"


def test_corrupt_fault_is_corrupt(tmp_path: Path, context: ProbeContext, vbrpg_app: VbrpgApp) -> None:
    vbrpg_app.fault("corrupt")
    observation = run_once(integrity_probe(tmp_path, context, vbrpg_app.database))
    assert (observation.ok, observation.reason) == (False, "corrupt")


def test_fk_violation_in_the_example_database_names_the_row(
    tmp_path: Path, context: ProbeContext, vbrpg_app: VbrpgApp
) -> None:
    execute(
        vbrpg_app.database,
        "INSERT INTO game_room_participants (id, room_id, player_id, is_host, is_ai) VALUES (7777, 987654, 1, 0, 0)",
    )
    observation = run_once(integrity_probe(tmp_path, context, vbrpg_app.database))
    assert observation.reason == "foreign_key_violation"
    assert {"table": "game_room_participants", "rowid": 7777, "parent": "game_rooms"} in observation.detail[
        "foreign_key_violations"
    ]


def test_the_schedule_file_is_written_when_a_full_check_passes_and_read_back_after_a_restart(
    tmp_path: Path, context: ProbeContext
) -> None:
    database = make_game_database(tmp_path / "vbrpg.db")
    schedule = context.state_dir.service_dir("vbrpg") / "integrity.json"
    probe = integrity_probe(tmp_path, context, database)
    assert run_once(probe).detail["check"] == "full"
    written = os.stat(schedule)
    last_full = json.loads(schedule.read_text())["last_full_at"]
    execute(database, "UPDATE players SET name = 'renamed' WHERE id = 1")
    assert run_once(probe).detail["check"] == "quick"
    assert (os.stat(schedule).st_ino, os.stat(schedule).st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    execute(database, "UPDATE players SET name = 'renamed again' WHERE id = 1")
    restarted = integrity_probe(tmp_path, context, database)  # a new probe object reads the file once
    assert run_once(restarted).detail["check"] == "quick"
    assert json.loads(schedule.read_text())["last_full_at"] == last_full
