"""replication/litestream.py with the real Litestream binary: where it is found, the config it is given (no secret
in it), the environment it runs in, a rollback-journal database refused, and what a real replica holds."""

from __future__ import annotations

import json
import sqlite3
import stat
import sys
from contextlib import closing
from pathlib import Path

import pytest

from rollbackd.config.model import ServiceConfig
from rollbackd.replication.litestream import (
    CredentialsError,
    LitestreamMissing,
    NotWalMode,
    check_wal_mode,
    child_environment,
    find_litestream,
    parse_ltx,
    prepare,
    read_replica,
    replicated_until,
)
from rollbackd.state.state_dir import StateDir
from tests.backup.helpers import make_database, make_service, rollbackd

WHEEL_BINARY = Path(sys.executable).parent / "litestream"


def file_replica(tmp_path: Path, **replication: str) -> ServiceConfig:
    settings = "\n".join(f'{key} = "{value}"' for key, value in replication.items())
    replica = '[[service.replication.replicas]]\ntype = "file"\npath = "../replica"\n'
    extra = f"\n[service.replication]\n{settings}\n{replica}"
    return make_service(tmp_path, extra=extra)


def s3_replica(tmp_path: Path, endpoint: str, credentials: Path | None = None) -> ServiceConfig:
    secrets = f'credentials_file = "{credentials}"\n' if credentials else ""
    extra = (
        f'\n[service.replication]\n{secrets}[[service.replication.replicas]]\ntype = "s3"\n'
        f'endpoint = "{endpoint}"\nbucket = "b"\npath = "vbrpg"\nforce_path_style = true\n'
    )
    return make_service(tmp_path, extra=extra)


def test_the_wheels_binary_is_found_beside_python() -> None:
    assert find_litestream("") == WHEEL_BINARY


def test_a_missing_binary_names_the_extra_and_path(tmp_path: Path) -> None:
    with pytest.raises(LitestreamMissing, match="not an executable"):
        find_litestream(str(tmp_path / "litestream"))
    with pytest.raises(LitestreamMissing, match="not an executable"):
        find_litestream("no-such-litestream", search_path=str(tmp_path))


def test_generated_config_is_private_and_holds_no_secret(tmp_path: Path) -> None:
    credentials = tmp_path / "s3.env"
    credentials.write_text("# keys\nAWS_ACCESS_KEY_ID=AKIAEXAMPLE\nexport AWS_SECRET_ACCESS_KEY='s3cr3t-value'\n")
    service = s3_replica(tmp_path, "http://127.0.0.1:9", credentials)
    litestream = prepare(service, StateDir(tmp_path / "state"), environ={"PATH": "/usr/bin"})
    text = litestream.config.read_text()
    assert stat.S_IMODE(litestream.config.stat().st_mode) == 0o600
    assert "s3cr3t-value" not in text and "AKIAEXAMPLE" not in text
    [db] = json.loads(text)["dbs"]
    assert db["path"] == str(service.database)
    assert db["monitor-interval"] == "1000ms"  # the WAL read as often as it is shipped: one period of lag, not two
    assert db["replica"] == {
        "type": "s3",
        "bucket": "b",
        "path": "vbrpg",
        "region": "us-east-1",
        "endpoint": "http://127.0.0.1:9",
        "force-path-style": True,
        "sync-interval": "1000ms",
    }
    assert litestream.env["AWS_SECRET_ACCESS_KEY"] == "s3cr3t-value"  # noqa: S105 - a test value
    assert litestream.env["AWS_ACCESS_KEY_ID"] == "AKIAEXAMPLE"
    assert "-no-expand-env" in litestream.replicate_argv()


def test_sync_interval_sets_the_database_monitor_and_the_replica_sync(tmp_path: Path) -> None:
    service = file_replica(tmp_path, sync_interval="200ms")
    make_database(service.database)
    litestream = prepare(service, StateDir(tmp_path / "state"))
    [db] = json.loads(litestream.config.read_text())["dbs"]
    assert db["monitor-interval"] == "200ms" and db["replica"]["sync-interval"] == "200ms"
    # The real binary takes the key (an unknown or malformed one would fail the config load here).
    once = litestream.run(litestream.argv("replicate", "-once", "-force-snapshot"), timeout=60)
    assert once.ok, once.output_tail


def test_aws_ca_bundle_is_dropped_only_for_plain_http_endpoints(tmp_path: Path) -> None:
    environ = {"AWS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt", "PATH": "/usr/bin"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = child_environment(s3_replica(tmp_path / "a", "http://127.0.0.1:9"), environ)
    tls = child_environment(s3_replica(tmp_path / "b", "https://s3.example.org"), environ)
    assert "AWS_CA_BUNDLE" not in plain and plain["PATH"] == "/usr/bin"
    assert tls["AWS_CA_BUNDLE"] == environ["AWS_CA_BUNDLE"]


def test_a_bad_credentials_line_is_named_without_its_value(tmp_path: Path) -> None:
    credentials = tmp_path / "s3.env"
    credentials.write_text("AWS_ACCESS_KEY_ID=k\nthe-secret-itself\n")
    with pytest.raises(CredentialsError) as raised:
        child_environment(s3_replica(tmp_path, "http://127.0.0.1:9", credentials), {})
    assert f"{credentials}:2" in str(raised.value)
    assert "the-secret-itself" not in str(raised.value)


def test_a_rollback_journal_database_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    database = make_database(tmp_path / "app/data/vbrpg.db", journal_mode="delete")
    with pytest.raises(NotWalMode, match=r"PRAGMA journal_mode=wal"):
        check_wal_mode(database)
    with closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    check_wal_mode(make_database(tmp_path / "wal.db"))  # WAL: no complaint


def test_ltx_listing_gives_newest_transaction_and_snapshot() -> None:
    listing = [
        {"level": 0, "min_txid": "1", "max_txid": "1", "size": 5, "timestamp": "2026-12-01T10:00:00Z"},
        {"level": 0, "min_txid": "2", "max_txid": "2", "size": 5, "timestamp": "2026-12-01T10:00:07Z"},
        {"level": 9, "min_txid": "1", "max_txid": "1", "size": 9, "timestamp": "2026-12-01T10:00:01Z"},
    ]
    state = parse_ltx(json.dumps(listing))
    assert state.files == 3
    assert state.newest_transaction == 1796119207.0
    assert state.newest_snapshot == 1796119201.0
    assert parse_ltx("[]").newest_transaction is None


def test_a_real_file_replica_lists_what_was_replicated(tmp_path: Path) -> None:
    service = file_replica(tmp_path)
    make_database(service.database)
    litestream = prepare(service, StateDir(tmp_path / "state"))
    assert replicated_until(litestream.binary, litestream.config, service) is None  # nothing replicated yet
    once = litestream.run(litestream.argv("replicate", "-once", "-force-snapshot"), timeout=60)
    assert once.ok, once.output_tail
    state = read_replica(litestream, timeout=30)
    assert state.files >= 1 and state.newest_snapshot is not None
    assert replicated_until(litestream.binary, litestream.config, service) == state.newest_transaction
    restored = tmp_path / "restored.db"
    assert litestream.run(litestream.restore_argv(restored), timeout=60).ok
    with closing(sqlite3.connect(restored)) as connection:
        assert connection.execute("SELECT count(*) FROM players").fetchone()[0] == 10


def test_check_config_warns_of_a_rollback_journal_database_and_a_replica_on_the_same_disk(tmp_path: Path) -> None:
    service = file_replica(tmp_path, binary=str(tmp_path / "no-litestream"))
    make_database(service.database, journal_mode="delete")
    checked = rollbackd(tmp_path / "rollbackd.toml", "check-config", "--quiet")
    assert checked.returncode == 0, checked.stderr
    assert "not off-disk" in checked.stderr
    assert "PRAGMA journal_mode=wal" in checked.stderr
    assert "no-litestream' is not an executable file" in checked.stderr
