"""An action is judged by the service afterwards, not only by its command's exit code.

The runbook's restart races an operator's own start: the restart command finds the service already running and
exits non-zero, while the service is up and healthy. That must count as a restart done (verified as usual), with
both the exit code and what was seen in the history, not as a failed action that sends a healthy service to HOLD.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.rollbackd_config import control_toml
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

# The operator's start lands first; rollbackd's own start then finds the service running and exits non-zero.
OPERATOR_RACE = (
    "import subprocess, sys; argv = sys.argv[1:]; subprocess.run(argv, check=True); "
    "sys.exit(subprocess.run(argv, check=False).returncode)"
)


class RacedRestartStack(Stack):
    def control_config(self) -> str:
        restart = [sys.executable, "-c", OPERATOR_RACE, *self.start_argv()]
        return super().control_config() + f"restart = {json.dumps(restart)}\n"


class RacedStartStack(Stack):
    """Every start rollbackd runs is raced by an operator's: it exits non-zero, the service is up."""

    def control_config(self) -> str:
        start = [sys.executable, "-c", OPERATOR_RACE, *self.start_argv()]
        return control_toml(start, self.detached.stop_argv())


def test_a_restart_that_exits_non_zero_while_the_service_comes_up_healthy_counts_as_done(tmp_path: Path) -> None:
    stack = RacedRestartStack(tmp_path)
    try:
        stack.set_up()
        stack.start_daemon()
        assert stack.fault("kill").returncode == 0
        incident = stack.settled_incident("process-down")
        assert incident.outcome == "recovered", incident.notes
        [action] = incident.actions
        assert (action.action, action.outcome) == ("restart", "success")
        # Both in the history: the command's non-zero exit, and the service seen up and answering.
        assert [command["exit_code"] != 0 for command in action.commands] == [True]
        after = action.detail["service_after"]
        assert after["exit_code"] == action.commands[0]["exit_code"]
        assert after["health_ok"] is True and after["process_up"] is True and after["pid"], after
        assert "already running" in action.commands[0]["output_tail"]
        assert stack.health() == 200
        assert stack.state() == "ok"
    finally:
        stack.tear_down()


def test_a_restore_whose_start_is_raced_by_an_operator_counts_as_done(tmp_path: Path) -> None:
    stack = RacedStartStack(tmp_path)
    try:
        stack.set_up()
        stack.start_daemon()
        before = stack.counts()
        assert stack.fault("data-loss").returncode == 0
        incident = stack.settled_incident("data-loss")
        assert incident.outcome == "recovered", incident.notes
        [action] = incident.actions
        assert (action.action, action.outcome) == ("restore", "success")
        after = action.detail["service_after"]
        assert after["health_ok"] is True and after["process_up"] is True, after
        assert "did not start" in after["command"]
        assert action.detail["restore"]["quarantined"], action.detail
        assert stack.counts()["game_rooms"] == before["game_rooms"]
        assert stack.health() == 200
    finally:
        stack.tear_down()
