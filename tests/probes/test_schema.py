"""The database's revision against the code's head, every state, with the vault for Scenario 2."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from rollbackd.metrics import Metrics
from rollbackd.probes import ProbeContext
from rollbackd.probes.schema import SchemaProbe
from rollbackd.state.vault import Vault
from tests.probes.example_app import VbrpgApp
from tests.probes.probe_support import run_once, service_config
from tests.probes.script_files import write_script


@pytest.fixture
def versions(tmp_path: Path) -> Path:
    """Code with a1 <- b2 (head)."""
    directory = tmp_path / "alembic" / "versions"
    write_script(directory, "a1", None)
    write_script(directory, "b2", "a1")
    return directory


def database_at(path: Path, *revisions: str, versioned: bool = True) -> Path:
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE players (id INTEGER PRIMARY KEY)")
        if versioned:
            connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
            connection.executemany("INSERT INTO alembic_version VALUES (?)", [(revision,) for revision in revisions])
        connection.commit()
    return path


def schema_probe(tmp_path: Path, context: ProbeContext, database: Path, versions: Path) -> SchemaProbe:
    return SchemaProbe(service_config(tmp_path, database=database, versions_dir=versions), context)


def test_in_sync(tmp_path: Path, context: ProbeContext, versions: Path) -> None:
    observation = run_once(schema_probe(tmp_path, context, database_at(tmp_path / "v.db", "b2"), versions))
    assert observation.ok
    assert observation.detail["state"] == "in_sync"
    assert observation.detail["code_heads"] == ["b2"]
    assert observation.values["in_sync"] == 1


def test_db_behind_lists_the_revisions_to_apply(tmp_path: Path, context: ProbeContext, versions: Path) -> None:
    observation = run_once(schema_probe(tmp_path, context, database_at(tmp_path / "v.db", "a1"), versions))
    assert (observation.ok, observation.reason) == (False, "db_behind")
    assert observation.detail["db_revision"] == "a1"
    assert observation.detail["path"] == ["b2"]


def test_db_ahead_of_code_that_lost_its_script_is_known_through_the_vault(
    tmp_path: Path, context: ProbeContext, versions: Path
) -> None:
    database = database_at(tmp_path / "v.db", "c3")
    newer = write_script(versions, "c3", "b2")
    probe = schema_probe(tmp_path, context, database, versions)
    seen = run_once(probe)  # the deploy: the probe sees c3 and vaults it
    newer.unlink()  # the code is rolled back; the database stays at c3
    observation = run_once(probe)
    assert seen.detail["state"] == "in_sync"
    assert (observation.ok, observation.reason) == (False, "db_ahead")
    assert observation.detail["path"] == ["c3"]  # what a downgrade to the code's head undoes
    assert observation.values["vault_scripts"] == 3
    assert (tmp_path / "state" / "vault" / "vbrpg" / newer.name).is_file()


def test_revision_nobody_knows(tmp_path: Path, context: ProbeContext, versions: Path) -> None:
    observation = run_once(schema_probe(tmp_path, context, database_at(tmp_path / "v.db", "ffff0000"), versions))
    assert (observation.ok, observation.reason) == (False, "unknown_revision")
    assert observation.detail["relation"] == "unknown"


def test_revision_on_a_branch_the_code_does_not_descend_from(
    tmp_path: Path, context: ProbeContext, versions: Path
) -> None:
    side = tmp_path / "side"
    write_script(side, "x2", "a1")
    Vault(context.state_dir.vault("vbrpg")).store_from(side)  # seen once, on another deploy
    observation = run_once(schema_probe(tmp_path, context, database_at(tmp_path / "v.db", "x2"), versions))
    assert observation.reason == "unknown_revision"
    assert observation.detail["relation"] == "diverged"


def test_unversioned_database(tmp_path: Path, context: ProbeContext, versions: Path) -> None:
    database = database_at(tmp_path / "v.db", versioned=False)
    observation = run_once(schema_probe(tmp_path, context, database, versions))
    assert (observation.ok, observation.reason) == (False, "unversioned")
    assert observation.detail["path"] == ["b2", "a1"]


def test_missing_database_is_unknown(tmp_path: Path, context: ProbeContext, versions: Path) -> None:
    observation = run_once(schema_probe(tmp_path, context, tmp_path / "gone.db", versions))
    assert (observation.ok, observation.reason) == (False, "unavailable")
    assert observation.detail["state"] == "unknown"


def test_missing_versions_dir_is_unknown(tmp_path: Path, context: ProbeContext) -> None:
    database = database_at(tmp_path / "v.db", "b2")
    observation = run_once(schema_probe(tmp_path, context, database, tmp_path / "nowhere"))
    assert observation.reason == "unavailable"
    assert "does not exist" in observation.detail["error"]


def test_exports_state_and_revisions(tmp_path: Path, context: ProbeContext, versions: Path) -> None:
    probe = schema_probe(tmp_path, context, database_at(tmp_path / "v.db", "a1"), versions)
    metrics = Metrics()
    probe.export(metrics, run_once(probe))
    sample = metrics.registry.get_sample_value
    assert sample("rollbackd_schema_in_sync", {"service": "vbrpg"}) == 0
    assert sample("rollbackd_schema_state", {"service": "vbrpg", "state": "db_behind"}) == 1
    assert sample("rollbackd_schema_state", {"service": "vbrpg", "state": "in_sync"}) == 0
    assert sample("rollbackd_schema_revision_info", {"service": "vbrpg", "db_revision": "a1", "code_head": "b2"}) == 1
    assert sample("rollbackd_vault_scripts", {"service": "vbrpg"}) == 2


def test_schema_skew_fault_is_db_ahead_when_the_vault_saw_the_script(
    tmp_path: Path, context: ProbeContext, vbrpg_app: VbrpgApp
) -> None:
    probe = schema_probe(tmp_path, context, vbrpg_app.database, vbrpg_app.versions_dir)
    in_sync = run_once(probe)
    stash = tmp_path / "deployed"
    vbrpg_app.fault("schema-skew", "--stash", str(stash))
    probe.vault.store_from(stash)  # the probe copied the script while it was deployed; the stash is that moment
    ahead = run_once(probe)
    assert in_sync.ok and in_sync.values["vault_scripts"] == 4
    assert (ahead.ok, ahead.reason) == (False, "db_ahead")
    assert ahead.detail["db_revision"] == "5a7d3e9b1f24"
    assert ahead.detail["code_heads"] == ["e6093b7a4c18"]
    assert ahead.detail["path"] == ["5a7d3e9b1f24"]


def test_schema_skew_fault_unseen_by_the_vault_is_unknown_revision(
    tmp_path: Path, context: ProbeContext, vbrpg_app: VbrpgApp
) -> None:
    vbrpg_app.fault("schema-skew")
    observation = run_once(schema_probe(tmp_path, context, vbrpg_app.database, vbrpg_app.versions_dir))
    assert (observation.ok, observation.reason) == (False, "unknown_revision")


def test_example_database_one_migration_behind_is_db_behind(
    tmp_path: Path, context: ProbeContext, vbrpg_app: VbrpgApp
) -> None:
    vbrpg_app.migrate("-1")
    observation = run_once(schema_probe(tmp_path, context, vbrpg_app.database, vbrpg_app.versions_dir))
    assert (observation.reason, observation.detail["path"]) == ("db_behind", ["e6093b7a4c18"])


def test_unchanged_database_and_scripts_are_not_read_again_and_report_the_same(
    tmp_path: Path, context: ProbeContext, versions: Path
) -> None:
    probe = schema_probe(tmp_path, context, database_at(tmp_path / "v.db", "b2"), versions)
    first, second = run_once(probe), run_once(probe)
    assert "skipped" not in first.detail
    assert first.detail["vault_stored"] == ["a1", "b2"]
    note = str(second.detail.pop("skipped"))
    assert "database" in note and "scripts" in note and "data_version" in note
    assert (second.ok, second.reason, second.values) == (first.ok, first.reason, first.values)
    assert second.detail == {**first.detail, "vault_stored": []}  # nothing new to store, as a full read finds


def test_a_new_script_in_the_versions_dir_is_read_at_the_next_run(
    tmp_path: Path, context: ProbeContext, versions: Path
) -> None:
    probe = schema_probe(tmp_path, context, database_at(tmp_path / "v.db", "b2"), versions)
    run_once(probe)
    assert "scripts" in str(run_once(probe).detail["skipped"])
    write_script(versions, "c3", "b2")
    after = run_once(probe)
    assert (after.reason, after.detail["path"], after.detail["vault_stored"]) == ("db_behind", ["c3"], ["c3"])
    assert "scripts" not in str(after.detail.get("skipped"))
    assert after.values["vault_scripts"] == 3


def test_a_revision_written_by_another_connection_is_read_at_the_next_run(
    tmp_path: Path, context: ProbeContext, versions: Path
) -> None:
    database = database_at(tmp_path / "v.db", "a1")
    probe = schema_probe(tmp_path, context, database, versions)
    assert run_once(probe).reason == "db_behind"
    with closing(sqlite3.connect(database)) as connection:  # the deploy's `alembic upgrade`
        connection.execute("UPDATE alembic_version SET version_num = 'b2'")
        connection.commit()
    after = run_once(probe)
    assert (after.ok, after.detail["db_revision"]) == (True, "b2")
    assert "database" not in str(after.detail.get("skipped"))


def test_a_script_removed_from_the_vault_is_stored_again_at_the_next_run(
    tmp_path: Path, context: ProbeContext, versions: Path
) -> None:
    """The versions dir unchanged, the vault not: its own stamp says so (an operator's cleanup, or the file
    watch's Vault feeding the same directory)."""
    probe = schema_probe(tmp_path, context, database_at(tmp_path / "v.db", "b2"), versions)
    run_once(probe)
    assert "scripts" in str(run_once(probe).detail["skipped"])
    Vault(context.state_dir.vault("vbrpg")).scripts()["a1"].unlink()
    after = run_once(probe)
    assert (after.detail["vault_stored"], after.values["vault_scripts"]) == (["a1"], 2)
    assert "scripts" not in str(after.detail.get("skipped"))
