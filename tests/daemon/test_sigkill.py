"""SIGKILL of the daemon, or of `rollbackd restore`, in the middle of a restore: nothing is left pending or open.

The file side was already safe (the journal lets the next start finish or undo the restore); these check the rest:
the history closes the dead incident and action as ``interrupted`` with what the journal says happened, `status`
with no daemon does not claim a recovery is running, the dead action does not count against ``max_actions``, and
a restore whose `rollbackd restore` died is finished or undone by the running daemon without a person.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rollbackd.state.history import History
from tests.support.rollbackd_daemon import wait_for
from tests.support.stack import running_stack

pytestmark = pytest.mark.e2e

RESTORE_ENDS = {"done": "finished", "undone": "undone"}


def journal_of(state_dir: Path) -> Path:
    return state_dir / "services" / "vbrpg" / "restore-journal.json"


def read_state(journal: Path) -> str | None:
    try:
        return str(json.loads(journal.read_text())["state"])
    except (OSError, ValueError, KeyError):
        return None


def test_sigkill_of_the_daemon_during_a_restore_is_closed_as_interrupted_at_the_next_start(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        assert stack.daemon is not None
        journal = journal_of(stack.state_dir)
        # The runbook's Scenario 3: rows deleted by a migration; the daemon restores the pre-migration backup.
        assert stack.fault("data-loss").returncode == 0
        wait_for(journal.exists, "the restore to begin", log=stack.log_tail, step=0.002)
        stack.daemon.send_signal(signal.SIGKILL)  # the daemon alone: its control command may go on
        assert stack.daemon.wait(timeout=30) == -signal.SIGKILL
        written = json.loads(journal.read_text())

        # What the dead daemon left: an open incident, its restore action running, the journal naming both.
        [incident] = stack.incidents()
        [action] = [action for action in incident.actions if action.action == "restore"]
        assert (incident.outcome, action.outcome) == ("open", "running")
        assert (written["incident_id"], written["action_id"]) == (incident.id, action.id)

        # `status` with no daemon: no RECOVERING, it says the recovery was interrupted.
        offline = stack.rollbackd("status", "--json")
        assert offline.returncode == 4, offline.stdout + offline.stderr
        policy = json.loads(offline.stdout)["services"]["vbrpg"]["policy"]
        assert policy["state"] == "interrupted", policy
        text = stack.rollbackd("status")
        assert "RECOVERING" not in text.stdout and "vbrpg: INTERRUPTED" in text.stdout, text.stdout

        # The next start finishes or undoes the restore and closes the incident and the action.
        stack.start_daemon(backup=False)  # backups exist: no start-up backup is due
        closed = next(entry for entry in stack.incidents() if entry.id == incident.id)
        [closed_action] = [entry for entry in closed.actions if entry.id == action.id]
        assert closed.outcome == "interrupted", closed.notes
        assert closed.closed_at is not None and closed.closed_at >= incident.opened_at
        assert closed_action.outcome == "interrupted"
        assert closed_action.finished_at is not None
        record = closed_action.detail["interrupted"]
        assert record["restore"] in ("finished", "undone"), record
        assert record["restore"] in closed.notes and "action" in closed.notes
        if record["restore"] == "finished":
            assert closed.backup_used == written["backup"]
        assert "restore journal says" in record["end_state"]
        log = stack.log_tail(400)
        assert f"incident {incident.id} closed as interrupted" in log

        # The dead action no longer counts against max_actions. An undone restore brings the fault back, so the
        # restarted daemon may open an incident of its own: count once it has settled, not while it acts.
        wait_for(lambda: stack.health() == 200, "the service to answer again")

        def settled() -> bool:
            later = [entry for entry in stack.incidents() if entry.id != incident.id]
            fault_back = record["restore"] == "undone"  # the rows are missing again: the daemon acts on its own
            return (bool(later) or not fault_back) and all(entry.outcome != "open" for entry in later)

        wait_for(settled, "the restarted daemon's own incidents to close", log=stack.log_tail)
        history = History(stack.state_dir / "rollbackd.db")
        try:
            counted = history.automatic_actions_since("vbrpg", incident.opened_at - 1)
            later = [entry for entry in stack.incidents() if entry.id != incident.id]
            assert counted == sum(
                1 for entry in later for act in entry.actions if act.outcome in ("running", "success", "failed")
            )
        finally:
            history.close()

        # `history` tells it as it was.
        table = stack.rollbackd("history", "--json")
        [row] = [row for row in json.loads(table.stdout) if row["incident"] == incident.id]
        assert row["outcome"] == "interrupted"
        assert "restore (interrupted)" in row["notes"], row


def test_a_killed_rollbackd_restore_is_finished_or_undone_by_the_daemon_and_shown_by_status(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        assert stack.daemon is not None
        journal = journal_of(stack.state_dir)

        def kill_a_restore() -> str:
            restore = subprocess.Popen(  # noqa: S603 - this interpreter, fixed argv
                [sys.executable, "-m", "rollbackd", "--config", str(stack.config_path), "restore", "--yes"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            state = wait_for(lambda: read_state(journal) in ("stopping", "copying", "copied") and read_state(journal),
                             "the restore to begin", step=0.001)  # fmt: skip
            restore.kill()
            assert restore.wait(timeout=30) == -signal.SIGKILL
            return str(state)

        # With the daemon running: it sees the restore's owner gone and finishes or undoes it, no person needed.
        killed_in = kill_a_restore()
        final = wait_for(lambda: read_state(journal) in RESTORE_ENDS and read_state(journal), "the daemon to resume")
        assert final in RESTORE_ENDS, (killed_in, final)
        wait_for(lambda: stack.health() == 200, "the service to answer again")
        assert "resuming the restore of vbrpg interrupted in state" in stack.log_tail(400)

        # With no daemon: `status` shows the pending restore and how to end it.
        stack.daemon.send_signal(signal.SIGTERM)
        assert stack.daemon.wait(timeout=60) == 0
        killed_in = kill_a_restore()
        offline = stack.rollbackd("status", "--json")
        pending = json.loads(offline.stdout)["services"]["vbrpg"]["pending_restore"]
        assert pending["state"] == read_state(journal) and pending["backup"], pending
        text = stack.rollbackd("status").stdout
        assert "pending restore" in text and "rollbackd restore --resume" in text, text

        # The next start resumes it (as before), and status then shows none.
        stack.start_daemon(backup=False)  # backups exist: no start-up backup is due
        assert read_state(journal) in RESTORE_ENDS
        live = stack.status()
        assert live is not None and live["services"]["vbrpg"].get("pending_restore") is None
