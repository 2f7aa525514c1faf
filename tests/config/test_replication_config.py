"""[service.replication]: bad input names its key path; secrets are refused in the TOML; a replica on the
database's own disk is a warning, not an error."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from rollbackd.config import toml_dump
from rollbackd.config.model import (
    Config,
    ConfigError,
    FileReplica,
    S3Replica,
    config_warnings,
    dump_config,
    parse_config,
)

SERVICE = """
[[service]]
name = "vbrpg"
workdir = "backend"
database = "data/vbrpg.db"
base_url = "http://127.0.0.1:8000"
"""


def parse(text: str, tmp_path: Path) -> Config:
    return parse_config(textwrap.dedent(text), tmp_path / "rollbackd.toml")


MALFORMED = [
    (
        "unknown replication key",
        SERVICE + "[service.replication]\nsync_intervall = '1s'\n[[service.replication.replicas]]\ntype = 'file'\n"
        "path = '/r'\n",
        "service[0].replication.sync_intervall",
        "sync_interval",
    ),
    (
        "unknown replica key",
        SERVICE + "[service.replication]\n[[service.replication.replicas]]\ntype = 'file'\npath = '/r'\nbukket = 'x'\n",
        "service[0].replication.replicas[0].bukket",
        "unknown key; expected one of: path, type",
    ),
    (
        "unknown replica type",
        SERVICE + "[service.replication]\n[[service.replication.replicas]]\ntype = 'gcs'\n",
        "service[0].replication.replicas[0]",
        "unknown replica type 'gcs'; expected one of: file, s3",
    ),
    (
        "s3 without a bucket",
        SERVICE + "[service.replication]\n[[service.replication.replicas]]\ntype = 's3'\n",
        "service[0].replication.replicas[0].bucket",
        "required",
    ),
    (
        "managed without replicas",
        SERVICE + "[service.replication]\nmanaged = true\n",
        "service[0].replication",
        "at least one [[service.replication.replicas]]",
    ),
    (
        "managed = false without config or unit",
        SERVICE + "[service.replication]\nmanaged = false\n",
        "service[0].replication",
        "managed = false needs config and unit",
    ),
    (
        "managed = false without unit",
        SERVICE + "[service.replication]\nmanaged = false\nconfig = '/etc/litestream.yml'\n",
        "service[0].replication",
        "managed = false needs unit",
    ),
    (
        "secret in the TOML",
        SERVICE + "[service.replication]\n[[service.replication.replicas]]\ntype = 's3'\nbucket = 'b'\n"
        "secret_access_key = 'hunter2'\n",
        "service[0].replication.replicas[0]",
        "credentials are never read from the TOML (secret_access_key)",
    ),
    (
        "two replicas for one Litestream",
        SERVICE + "[service.replication]\n[[service.replication.replicas]]\ntype = 'file'\npath = '/a'\n"
        "[[service.replication.replicas]]\ntype = 'file'\npath = '/b'\n",
        "service[0].replication",
        "exactly one",
    ),
    (
        "bare-number duration",
        SERVICE + "[service.replication]\nmax_lag = 30\n[[service.replication.replicas]]\ntype = 'file'\npath = '/r'\n",
        "service[0].replication.max_lag",
        "'30s'",
    ),
]


@pytest.mark.parametrize(("text", "key", "fragment"), [case[1:] for case in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_replication_names_the_key_path(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(text, tmp_path)
    by_key = {problem.key: problem.message for problem in raised.value.problems}
    assert key in by_key, raised.value.render()
    assert fragment in by_key[key]
    assert "hunter2" not in raised.value.render()


def test_replication_is_off_by_default(tmp_path: Path) -> None:
    assert parse(SERVICE, tmp_path).service[0].replication is None


def test_replication_resolves_paths_and_durations(tmp_path: Path) -> None:
    text = (
        SERVICE
        + """
    [service.replication]
    binary = "../venv/bin/litestream"
    credentials_file = "secrets/s3.env"
    sync_interval = "500ms"
    [[service.replication.replicas]]
    type = "s3"
    endpoint = "http://127.0.0.1:9000/"
    bucket = "backups"
    path = "vbrpg"
    force_path_style = true
    """
    )
    replication = parse(text, tmp_path).service[0].replication
    assert replication is not None
    assert replication.managed and replication.kind == "litestream"
    assert replication.binary == str(tmp_path / "venv/bin/litestream")
    assert replication.credentials_file == tmp_path / "backend/secrets/s3.env"
    assert replication.sync_interval == 0.5
    assert replication.max_lag == 30.0
    [s3_replica] = replication.replicas
    assert isinstance(s3_replica, S3Replica)
    assert s3_replica.endpoint == "http://127.0.0.1:9000"
    assert s3_replica.region == "us-east-1"


def test_replication_prints_back_unchanged(tmp_path: Path) -> None:
    text = SERVICE + "[service.replication]\nmanaged = false\nconfig = '/etc/litestream.yml'\nunit = 'litestream'\n"
    config = parse(text, tmp_path)
    assert config.service[0].replication is not None
    assert config.service[0].replication.unit == "litestream.service"
    reloaded = parse_config(toml_dump.dumps(dump_config(config)), tmp_path / "printed.toml")
    assert dump_config(reloaded) == dump_config(config)


def replica_warnings(config: Config) -> list[str]:
    return [warning for warning in config_warnings(config) if "replication" in warning]


def test_file_replica_on_the_database_disk_is_not_off_disk(tmp_path: Path) -> None:
    text = SERVICE + "[service.replication]\n[[service.replication.replicas]]\ntype = 'file'\npath = 'replica'\n"
    config = parse(text, tmp_path)
    [replica] = config.service[0].replication.replicas  # type: ignore[union-attr]
    assert isinstance(replica, FileReplica) and replica.path == tmp_path / "backend/replica"
    [warning] = replica_warnings(config)
    assert "not off-disk" in warning and "replicas[0]" in warning


def test_file_replica_on_another_filesystem_is_not_warned(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the temp dir's")
    text = SERVICE + f"[service.replication]\n[[service.replication.replicas]]\ntype = 'file'\npath = '{other}/r'\n"
    assert replica_warnings(parse(text, tmp_path)) == []


def test_readable_credentials_file_is_warned(tmp_path: Path) -> None:
    secrets = tmp_path / "s3.env"
    secrets.write_text("AWS_ACCESS_KEY_ID=k\nAWS_SECRET_ACCESS_KEY=s\n")
    secrets.chmod(0o644)
    text = (
        SERVICE
        + f"[service.replication]\ncredentials_file = '{secrets}'\n"
        + "[[service.replication.replicas]]\ntype = 's3'\nbucket = 'b'\n"
    )
    [warning] = replica_warnings(parse(text, tmp_path))
    assert "readable by others" in warning and "chmod 600" in warning
    secrets.chmod(0o600)
    assert replica_warnings(parse(text, tmp_path)) == []
