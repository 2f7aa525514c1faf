"""The daemon with replication on, hands-off: broken foreign keys outside a deploy restored from the replica to
the moment the database was last proven good (seconds, not the hourly backup), and a wiped data dir (database,
-wal and every backup gone) restored from the replica, verified, the service healthy, the history saying so.

(The example's `corrupt` fault needs the WAL truncated first, which Litestream's open read transaction never
allows; a bad write that breaks foreign keys is replicated like any write, which is the harder case anyway.)"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from rollbackd.config.model import load_config
from rollbackd.state.state_dir import StateDir
from tests.support.rollbackd_daemon import wait_for
from tests.support.stack import Stack, running_stack

from .litestream_child import LitestreamChild

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("replicated")
    replication = f"""
[service.replication]
sync_interval = "200ms"

[[service.replication.replicas]]
type = "file"
path = "{root / "offsite"}"

[[service.rules]]
name = "foreign-key-violation"
for = "2s"
"""
    with running_stack(root, extra_config=replication, rooms=20, players=40) as running:
        yield running


def replica(stack: Stack) -> LitestreamChild:
    """Reads the replica the daemon's own Litestream child writes (nothing is started here)."""
    service = load_config(stack.config_path).service[0]
    return LitestreamChild(service, StateDir(stack.state_dir), stack.root / "unused.log")


def new_room(stack: Stack, host: str) -> str:
    with stack.client() as client:
        created = client.post("/api/rooms", json={"name": host, "host_name": host})
    assert created.status_code == 201, created.text
    return str(created.json()["code"])


def wipe(folder: Path) -> None:
    """rm -rf, which races with whatever still writes there (the running service, Litestream): again until the
    folder is gone or holds no database and no backup."""
    for _ in range(20):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists() or not [*folder.glob("*.db"), *folder.glob("backups")]:
            return
        time.sleep(0.05)
    raise AssertionError(f"{folder} could not be wiped: {sorted(path.name for path in folder.iterdir())}")


def proven_good_since(stack: Stack, moment: float) -> bool:
    status = stack.status() or {}
    integrity = status.get("services", {}).get("vbrpg", {}).get("probes", {}).get("integrity", {})
    return bool(integrity.get("ok")) and float(integrity.get("at_epoch", 0)) > moment


def room_exists(stack: Stack, code: str) -> bool:
    return httpx.get(f"{stack.base_url}/api/rooms/{code}", timeout=10).status_code == 200


def break_foreign_keys(database: Path) -> None:
    """A buggy write: a participant of a room that does not exist (the app's connection enforces keys; this
    one does not), replicated by Litestream like any other write."""
    with closing(sqlite3.connect(database, isolation_level=None, timeout=30)) as connection:
        connection.execute("INSERT INTO game_room_participants (room_id, player_id) VALUES (999999, 1)")


def test_broken_foreign_keys_are_restored_from_the_replica_to_seconds_before(stack: Stack) -> None:
    code = new_room(stack, "written-after-the-startup-backup")
    replica(stack).wait_replicated(stack.root, "written-after-the-startup-backup")
    # A check that began once the replica held the write: restoring "the newest passing check" goes back to the
    # replica's state at that moment, and a commit shipped after a check began is not in it (README).
    shipped = time.time()
    wait_for(lambda: proven_good_since(stack, shipped), "a passing integrity check after the write was shipped")

    break_foreign_keys(stack.database)
    incident = stack.settled_incident("foreign-key-violation")

    assert incident.outcome == "recovered", incident.notes + stack.log_tail()
    [action] = incident.actions
    assert action.action == "restore" and action.detail["source"] == "replica", action.detail
    assert action.detail["point_basis"].startswith("the newest passing integrity"), action.detail
    assert incident.backup_used is not None and incident.backup_used.startswith("vbrpg_backup_")
    assert stack.query("PRAGMA foreign_key_check") == []
    assert room_exists(stack, code), action.detail  # the startup backup never held it: only the replica did
    lost = action.detail["rows_lost_estimate"]
    assert lost["game_rooms"] == 0 and lost["players"] == 0  # seconds of writes at most, and there were none
    assert stack.health() == 200
    assert list((stack.workdir / "data").glob("vbrpg_corrupted_*.db"))


def test_a_wiped_data_dir_is_restored_from_the_replica_hands_off(stack: Stack) -> None:
    code = new_room(stack, "written-after-the-first-restore")
    replica(stack).wait_replicated(stack.root, "written-after-the-first-restore")

    wipe(stack.workdir / "data")  # the database, its -wal, every local backup
    incident = stack.settled_incident("database-missing")

    assert incident.outcome == "recovered", incident.notes + stack.log_tail()
    [action] = incident.actions
    assert action.detail["source"] == "replica", action.detail
    # Nothing of the database was left to keep (at most an empty -wal that a running process recreated).
    assert not [path for path in action.detail["restore"]["quarantined"] if path.endswith(".db")]
    assert stack.database.is_file() and stack.query("PRAGMA integrity_check") == [("ok",)]
    assert room_exists(stack, code)  # written after the first restore: replication went on from it
    assert stack.health() == 200
    assert wait_for(lambda: stack.state() == "ok", "the policy back to OK")


def contents(database: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the example's tables (Litestream's own left out), to tell one database from another."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            table: connection.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()  # noqa: S608 - its own names
            for table in sorted(tables)
            if not table.startswith(("_litestream", "sqlite_"))
        }


def child_pid(stack: Stack) -> int | None:
    replication = (stack.status() or {}).get("services", {}).get("vbrpg", {}).get("replication") or {}
    return replication.get("pid") if replication.get("state") == "running" else None


def test_restores_by_hand_pause_the_daemons_child_and_the_replica_follows_the_restored_file(stack: Stack) -> None:
    """`rollbackd restore` (a local backup) and `restore --from-replica` with the daemon's child running: each
    swap happens with the child stopped, and the replica goes on from the restored file, not the lineage before."""
    taken = stack.rollbackd("backup", "--json")
    assert taken.returncode == 0, taken.stderr
    backup = Path(json.loads(taken.stdout)["path"]).name
    new_room(stack, "written-before-the-restore-by-hand")
    replica(stack).wait_replicated(stack.root, "written-before-the-restore-by-hand")
    before = wait_for(lambda: child_pid(stack), "the daemon's child replicating")

    restored = stack.rollbackd("restore", "--backup", backup, "--yes")

    assert restored.returncode == 0, restored.stdout + restored.stderr + stack.log_tail()
    assert "replication paused for pid" in stack.log_tail(200)
    after = wait_for(lambda: child_pid(stack), "the daemon's child replicating again")
    assert after != before  # stopped for the swap, started again on the restored file
    code = new_room(stack, "written-after-the-restore-by-hand")
    replica(stack).wait_replicated(stack.root, "written-after-the-restore-by-hand")
    newest = replica(stack).players_in_replica(stack.root)
    assert "written-before-the-restore-by-hand" not in newest, "the replica kept the lineage before the swap"
    assert contents(stack.root / "probe.db") == contents(stack.database), "the replica is not the restored file"

    # And a restore from the replica while the daemon replicates (refused before): the restored file plus the
    # write made after it, nothing of the lineage before it.
    from_replica = stack.rollbackd("restore", "--from-replica", "--yes", "--json")

    assert from_replica.returncode == 0, from_replica.stdout + from_replica.stderr + stack.log_tail()
    assert json.loads(from_replica.stdout)["ok"] is True
    names = {str(row[0]) for row in stack.query("SELECT name FROM players")}
    assert "written-after-the-restore-by-hand" in names and "written-before-the-restore-by-hand" not in names
    assert room_exists(stack, code)
    assert wait_for(lambda: child_pid(stack) not in (None, after), "the daemon's child replicating the new file")
