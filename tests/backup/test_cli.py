"""`rollbackd backup`, `backups` and `restore` as a person or a deploy script runs them: one-line errors, exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rollbackd.backup.catalog import list_backups
from tests.support.terminal import stderr_on_a_terminal

from .helpers import grow_database, make_database, make_service, rollbackd


def test_backup_prints_one_line_and_json_for_scripts(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    make_database(service.database, players=6)
    config = tmp_path / "rollbackd.toml"
    human = rollbackd(config, "backup")
    assert human.returncode == 0, human.stderr
    assert human.stdout.count("\n") == 1
    assert "revision e6093b7a4c18" in human.stdout and "quick_check ok" in human.stdout
    # Not a terminal: each phase one plain line, no bar.
    assert human.stderr == "copying vbrpg.db ...\nverifying the copy (quick_check, sha256) ...\n"
    scripted = rollbackd(config, "backup", "vbrpg", "--json")
    assert scripted.returncode == 0
    manifest = json.loads(scripted.stdout)
    assert manifest["reason"] == "manual" and manifest["row_counts"]["players"] == 6
    listed = json.loads(rollbackd(config, "backups", "list", "--json").stdout)
    assert [backup["status"] for backup in listed["backups"]] == ["verified", "verified"]


def test_backup_shows_phase_bytes_and_rate_on_a_terminal(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    make_database(service.database)
    grow_database(service.database, 2)
    code, output = stderr_on_a_terminal(
        [sys.executable, "-m", "rollbackd", "--config", str(tmp_path / "rollbackd.toml"), "backup"]
    )
    assert code == 0
    assert b"\r\x1b[Kcopying vbrpg.db: [" in output and b"100%" in output
    assert b" of 2." in output and b"MiB/s" in output  # bytes and rate
    assert b"verifying the copy (quick_check, sha256) ..." in output


def test_errors_are_one_line_with_a_named_exit_code(tmp_path: Path) -> None:
    make_service(tmp_path)
    config = tmp_path / "rollbackd.toml"
    missing = rollbackd(config, "backup")
    assert missing.returncode == 4
    assert missing.stderr.startswith("rollbackd backup: database ") and missing.stderr.count("\n") == 1
    assert "does not exist [source_unavailable]" in missing.stderr
    unknown = rollbackd(config, "backup", "nosuch")
    assert unknown.returncode == 2 and "no service named 'nosuch'" in unknown.stderr
    bad_time = rollbackd(config, "restore", "--before", "last tuesday", "--yes")
    assert bad_time.returncode == 2 and "YYYYMMDD_HHMMSS" in bad_time.stderr
    nothing = rollbackd(config, "restore", "--yes")
    assert nothing.returncode == 4 and "no verified backup" in nothing.stderr
    for result in (missing, unknown, bad_time, nothing):
        assert "Traceback" not in result.stderr


def test_restore_asks_first_and_refuses_without_control(tmp_path: Path) -> None:
    service = make_service(tmp_path)  # control kind none
    make_database(service.database, players=3)
    config = tmp_path / "rollbackd.toml"
    assert rollbackd(config, "backup").returncode == 0
    before = service.database.read_bytes()
    unconfirmed = rollbackd(config, "restore")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    refused = rollbackd(config, "restore", "--yes")
    assert refused.returncode == 1 and "--service-stopped" in refused.stderr
    assert service.database.read_bytes() == before
    assert rollbackd(config, "restore", "--dry-run").returncode == 1  # a dry run is refused the same way
    plan = rollbackd(config, "restore", "--dry-run", "--service-stopped")
    assert plan.returncode == 0 and "dry run: nothing was touched" in plan.stdout
    done = rollbackd(config, "restore", "--yes", "--service-stopped", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcome"] == "restored"
    assert rollbackd(config, "restore", "--resume").stdout.startswith("no interrupted restore")


def test_backups_verify_prune_and_drill(tmp_path: Path) -> None:
    service = make_service(tmp_path, backups={"keep_last": 1, "keep_daily": 0, "keep_weekly": 0})
    make_database(service.database)
    config = tmp_path / "rollbackd.toml"
    for _ in range(3):
        assert rollbackd(config, "backup").returncode == 0
    assert rollbackd(config, "backups", "verify").returncode == 0
    drill = rollbackd(config, "backups", "drill")
    assert drill.returncode == 0 and "drill ok" in drill.stdout
    oldest = list_backups(service.backups.dir, "vbrpg").backups[0].path
    with oldest.open("ab") as handle:
        handle.write(b"junk")
    verify = rollbackd(config, "backups", "verify", "vbrpg")
    assert verify.returncode == 1 and f"{oldest.name}: UNVERIFIED" in verify.stdout
    dry = rollbackd(config, "backups", "prune", "--dry-run")
    assert dry.returncode == 0 and "1 backup(s) would be removed" in dry.stdout
    assert "UNVERIFIED (left alone)" in dry.stdout
    assert len(list_backups(service.backups.dir, "vbrpg").backups) == 3
    pruned = json.loads(rollbackd(config, "backups", "prune", "--json").stdout)
    assert len(pruned["removed"]) == 1
    remaining = list_backups(service.backups.dir, "vbrpg")
    assert len(remaining.verified) == 1 and [entry.path for entry in remaining.unverified] == [oldest]
