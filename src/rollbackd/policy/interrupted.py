"""What a killed rollbackd left in the history, closed at its next start.

A SIGKILL (or a power loss) during a recovery leaves the incident ``open`` and its action ``running`` for ever:
`status` would go on saying RECOVERING, `history` "restore (running)", and the dead action would count against
``max_actions``. At start, holding the service's lock (no other process acts on the service meanwhile) and after
an interrupted restore was finished or undone, the daemon closes them as ``interrupted``: the action with its end
state (for a restore, what its journal says happened) and the time, the incident with a note saying the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rollbackd.backup.restore_journal import RestoreJournal
from rollbackd.state.history import ActionRecord, History

log = logging.getLogger(__name__)

# What the journal's final state means for the database.
RESTORE_ENDS = {
    "done": "finished",
    "undone": "undone",
    "aborted": "aborted",
}
LIVE_STATES = ("recovering", "verifying")  # a saved policy state only a running recovery can be in


@dataclass(frozen=True)
class InterruptedAction:
    """One action closed as interrupted, and what became of it."""

    incident_id: int | None
    action_id: int
    action: str
    restore: str | None  # finished | undone | aborted | pending; None: not a restore, or no journal names it
    end_state: str

    def describe(self) -> str:
        return f"{self.action} (action {self.action_id}) was interrupted: {self.end_state}"


def close_interrupted(
    history: History, service: str, journal: RestoreJournal | None, *, resumed_now: bool = False
) -> list[InterruptedAction]:
    """Close what a dead rollbackd left open for ``service``; return the actions closed.

    ``journal``: the service's restore journal as it is now (after ``resume_interrupted_restore``);
    ``resumed_now``: this start finished or undid it. Only for the daemon at start: a live recovery looks the same.
    """
    incidents, running = history.unfinished(service)
    closed = []
    for action in running:
        restore = _restore_end(action, journal) if action.action == "restore" else None
        end_state = _end_state(action, journal, restore, resumed_now)
        detail: dict[str, Any] = {"interrupted": {"at": history.clock(), "end_state": end_state}}
        if restore is not None:
            detail["interrupted"]["restore"] = restore
        history.interrupt_action(action.id, detail)
        closed.append(InterruptedAction(action.incident_id, action.id, action.action, restore, end_state))
    by_incident = {entry.incident_id: entry for entry in closed}
    for incident in incidents:
        entry = by_incident.get(incident.id)
        if entry is None and not incident.automatic:
            continue  # a manual rollback between its action and its verification may still be running
        if entry is None:
            notes = "rollbackd stopped between actions or during verification; the probes judge the service again"
        else:
            notes = f"rollbackd stopped during it: {entry.describe()}"
        finished = entry is not None and entry.restore == "finished" and journal is not None
        history.close_incident(
            incident.id,
            "interrupted",
            revision_after=journal.expected_revision if finished and journal is not None else None,
            backup_used=journal.backup if finished and journal is not None else None,
            notes=notes,
        )
        log.warning("%s: incident %d closed as interrupted: %s", service, incident.id, notes)
    saved = history.load_state(service)
    if saved is not None and saved.state in LIVE_STATES:
        # No recovery runs now: `status` without a daemon must not go on showing one.
        history.save_state(service, "ok", f"closed the recovery rollbackd was in when it stopped ({saved.reason})")
    return closed


def _restore_end(action: ActionRecord, journal: RestoreJournal | None) -> str | None:
    """How the restore ``action`` ended by its journal: None when no journal names it."""
    if journal is None:
        return None
    if journal.action_id is not None:
        if journal.action_id != action.id:
            return None
    elif journal.started_at < action.started_at:  # a journal of before the incident and action ids were recorded
        return None
    return RESTORE_ENDS.get(journal.state, "pending")


def _end_state(action: ActionRecord, journal: RestoreJournal | None, restore: str | None, resumed_now: bool) -> str:
    if restore is None or journal is None:
        if action.action == "restore":
            return "no restore journal names it: nothing was restored by it, or it was lost; the probes tell"
        return "not known: rollbackd stopped while it ran; the probes judge the service again"
    when = "at this start" if resumed_now else "before this start"
    if restore == "finished":
        return f"the restore journal says it was finished {when}: {journal.backup} is in place ({journal.detail})"
    if restore == "undone":
        return f"the restore journal says it was undone {when}: the old database is in place ({journal.detail})"
    if restore == "aborted":
        return f"the restore journal says it was aborted before anything changed ({journal.detail})"
    return f"the restore is still pending in state {journal.state!r}: run `rollbackd restore --resume`"
