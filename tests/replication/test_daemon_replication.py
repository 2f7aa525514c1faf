"""The daemon with replication: its S3 endpoint down from the start (it runs, reports replication down, the local
backups go on); a reload that takes replication away stops the child."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from rollbackd.config.model import parse_config
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.runtime.daemon import Daemon
from tests.backup.helpers import make_database
from tests.replication.s3_server import KEY, SECRET
from tests.support.vbrpg_service import free_port

pytestmark = pytest.mark.e2e


def quiet_service_toml(tmp_path: Path, database: Path) -> str:
    """A daemon and one service with the HTTP, integrity, process and rows probes off: these tests watch only
    replication (and what it shares with the lock probe and backups); each test appends its own keys."""
    return f"""
[daemon]
state_dir = "{tmp_path / "state"}"
metrics_listen = ""
shutdown_timeout = "5s"

[[service]]
name = "vbrpg"
workdir = "{tmp_path}"
database = "{database}"
base_url = "http://127.0.0.1:9"
probes.health.enabled = false
probes.latency.enabled = false
probes.integrity.enabled = false
probes.process.enabled = false
probes.rows.enabled = false
"""


def test_endpoint_down_at_startup_the_daemon_runs_and_backs_up(tmp_path: Path) -> None:
    database = make_database(tmp_path / "data" / "vbrpg.db")
    (tmp_path / "data" / "backups").mkdir(mode=0o700)
    credentials = tmp_path / "s3.env"
    credentials.write_text(f"AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY={SECRET}\n")
    credentials.chmod(0o600)
    text = (
        quiet_service_toml(tmp_path, database)
        + f"""deploy.watch = false

[service.replication]
credentials_file = "{credentials}"
max_lag = "15s"

[[service.replication.replicas]]
type = "s3"
endpoint = "http://127.0.0.1:{free_port()}"
bucket = "replicas"
force_path_style = true
"""
    )
    metrics = Metrics()
    daemon = Daemon(parse_config(text, tmp_path / "rollbackd.toml"), metrics=metrics)
    seen: dict[str, Any] = {}

    async def listener(observation: Observation) -> None:
        if observation.probe == "replication" and observation.reason == "unreachable" and not seen:
            # The pid first: another observation's listener may run while this one awaits the status, and it
            # must not ask for the exit (which stops the child) before this one is complete.
            seen["child_pid"] = daemon.services["vbrpg"].replication.pid  # type: ignore[union-attr]
            seen["observation"] = observation
            seen["status"] = (await daemon.status())["services"]["vbrpg"]
        backed_up = metrics.registry.get_sample_value(
            "rollbackd_backup_last_success_timestamp_seconds", {"service": "vbrpg"}
        )
        if "status" in seen and backed_up:
            daemon.request_exit()

    daemon.observation_listeners.append(listener)
    asyncio.run(asyncio.wait_for(daemon.serve(), 120))

    observation = seen["observation"]
    assert not observation.ok and observation.reason == "unreachable"
    sample = metrics.registry.get_sample_value
    assert sample("rollbackd_replication_up", {"service": "vbrpg"}) == 0
    assert sample("rollbackd_backup_last_success_timestamp_seconds", {"service": "vbrpg"})
    assert sorted((tmp_path / "data" / "backups").glob("vbrpg_backup_*.db"))
    replication = seen["status"]["replication"]
    assert replication["state"] == "running"  # Litestream keeps retrying the endpoint on its own backoff
    assert replication["reason"] == "unreachable" and "probe_error" in replication
    assert seen["child_pid"] is not None and not os.path.exists(f"/proc/{seen['child_pid']}")  # stopped with it


def test_a_reload_without_replication_stops_the_child(tmp_path: Path) -> None:
    database = make_database(tmp_path / "data" / "vbrpg.db")
    (tmp_path / "data" / "backups").mkdir(mode=0o700)
    base = (
        quiet_service_toml(tmp_path, database)
        + """probes.schema.enabled = false
probes.sqlite_lock.every = "200ms"
backups.enabled = false
deploy.watch = false
"""
    )
    replication = '\n[service.replication]\n[[service.replication.replicas]]\ntype = "file"\npath = "replica"\n'
    config_path = tmp_path / "rollbackd.toml"
    config_path.write_text(base + replication)
    daemon = Daemon(parse_config(config_path.read_text(), config_path), config_path=config_path)
    seen: dict[str, Any] = {}

    def listener(observation: Observation) -> None:
        slot = daemon.services.get("vbrpg")
        if slot is None:
            return
        replicated = (tmp_path / "replica").is_dir()
        if "pid" not in seen and slot.replication is not None and slot.replication.running and replicated:
            seen["pid"] = slot.replication.pid  # type: ignore[union-attr]
            config_path.write_text(base)
            daemon.handle_reload()
        elif "pid" in seen and slot.replication is None and not daemon.reloading:
            daemon.request_exit()

    daemon.observation_listeners.append(listener)
    asyncio.run(asyncio.wait_for(daemon.serve(), 120))
    assert seen["pid"] is not None and not os.path.exists(f"/proc/{seen['pid']}")
