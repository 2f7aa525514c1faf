"""managed = false: the operator's Litestream unit is stopped and started around a restore with systemctl.

systemctl cannot run here (PID 1 is not systemd), so a recorder stands in for it (as in tests/target/
test_control.py): what matters is the exact argv, and that a failure is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollbackd.config.model import ServiceConfig, parse_config
from rollbackd.metrics import Metrics
from rollbackd.replication.supervisor import ChildState, ReplicationControlError, UnitReplication, replication_for
from rollbackd.state.state_dir import StateDir
from tests.target.test_control import calls, recorder


def operator_service(tmp_path: Path) -> ServiceConfig:
    text = f"""
[[service]]
name = "vbrpg"
workdir = "{tmp_path}"
database = "data/vbrpg.db"
base_url = "http://127.0.0.1:8000"
[service.replication]
managed = false
config = "/etc/litestream.yml"
unit = "litestream"
"""
    return parse_config(text, tmp_path / "rollbackd.toml").service[0]


def test_pause_and_resume_stop_and_start_the_operators_unit(tmp_path: Path) -> None:
    service = operator_service(tmp_path)
    assert isinstance(replication_for(service, state_dir=StateDir(tmp_path / "s"), metrics=Metrics()), UnitReplication)
    fake, log = recorder(tmp_path, "systemctl")
    unit = UnitReplication(service, systemctl=str(fake))
    unit.pause()
    assert unit.state is ChildState.PAUSED
    unit.resume()
    assert unit.state is ChildState.RUNNING
    assert [call["argv"] for call in calls(log)] == [["stop", "litestream.service"], ["start", "litestream.service"]]


def test_a_unit_that_will_not_stop_is_a_clear_error(tmp_path: Path) -> None:
    fake, _ = recorder(tmp_path, "systemctl", fail_on="stop")
    unit = UnitReplication(operator_service(tmp_path), systemctl=str(fake))
    with pytest.raises(ReplicationControlError, match=r"cannot stop litestream.service: .* exit 5"):
        unit.pause()
    assert unit.describe()["last_error"] is not None
