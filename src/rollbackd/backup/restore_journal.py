"""The restore's journal: each step written down (atomically, fsynced) before it is performed.

A restore killed at any instant leaves the journal saying what was being done, so ``rollbackd restore --resume``
(or the daemon at start) can finish it or undo it. The journal lives in the state dir, never beside the database.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rollbackd.host.atomic_files import write_bytes_atomic
from rollbackd.state.service_lock import ServiceLock

JOURNAL_NAME = "restore-journal.json"
JOURNAL_FORMAT = 1

# The states in order (``undoing`` when a failed check sends it back). Finished: one of FINISHED.
STATES = ("planned", "stopping", "copying", "copied", "swapping", "swapped", "starting", "undoing")
FINISHED = ("done", "undone", "aborted")


class JournalError(Exception):
    """The journal cannot be read: a person must look at the state dir before anything is touched."""


@dataclass(frozen=True)
class Move:
    """One rename (``link`` for the database itself, so a database file exists at every instant)."""

    source: str
    target: str


@dataclass(frozen=True)
class RestoreJournal:
    service: str
    state: str
    backup: str
    backup_path: str
    backup_sha256: str
    database: str
    temp: str
    moves: tuple[Move, ...]
    journal_mode: str
    expected_revision: str | None
    expected_counts: dict[str, int | None]
    reason: str
    started_at: float
    control_kind: str
    service_stopped_by_caller: bool
    temp_sha256: str = ""
    detail: str = ""
    steps: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    # Whose restore this is in the history (None: `rollbackd restore` by hand, or a journal from before 0.x), so a
    # daemon killed during it can close that incident and action with what the journal says happened.
    incident_id: int | None = None
    action_id: int | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def advance(self, state: str, **changes: Any) -> RestoreJournal:
        return replace(self, state=state, **changes)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = JOURNAL_FORMAT
        data["moves"] = [asdict(move) for move in self.moves]
        data["steps"] = list(self.steps)
        return data

    @classmethod
    def from_json(cls, data: Any) -> RestoreJournal:
        if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT:
            raise JournalError("not a rollbackd restore journal")
        try:
            fields = {key: value for key, value in data.items() if key != "format"}
            fields["moves"] = tuple(Move(str(move["source"]), str(move["target"])) for move in data["moves"])
            fields["steps"] = tuple(dict(step) for step in data.get("steps", ()))
            journal = cls(**fields)
        except (KeyError, TypeError, ValueError) as error:
            raise JournalError(f"invalid restore journal: {error}") from error
        if journal.state not in (*STATES, *FINISHED):
            raise JournalError(f"invalid restore journal: unknown state {journal.state!r}")
        return journal


def journal_path(service_dir: Path) -> Path:
    return service_dir / JOURNAL_NAME


def read_journal(service_dir: Path) -> RestoreJournal | None:
    """Return the last restore's journal, None when there never was one. Raise JournalError when unreadable."""
    path = journal_path(service_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise JournalError(f"cannot read {path}: {error.strerror}") from error
    try:
        return RestoreJournal.from_json(json.loads(text))
    except ValueError as error:
        raise JournalError(f"{path} is not valid JSON: {error}") from error


def write_journal(service_dir: Path, journal: RestoreJournal) -> None:
    """Record the journal durably before the step it names is performed."""
    text = json.dumps(journal.to_json(), indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(journal_path(service_dir), text.encode("utf-8"))


def pending_summary(state_root: Path, service: str) -> dict[str, Any] | None:
    """For `status`: the restore of ``service`` not yet finished or undone, and whether its owner still runs it
    (it holds the service's lock) or died (then `rollbackd restore --resume`, or the daemon, ends it). None: none."""
    try:
        journal = read_journal(state_root / "services" / service)
    except JournalError as error:
        return {"state": "unreadable", "detail": str(error), "in_progress": False}
    if journal is None or journal.finished:
        return None
    try:
        holder = ServiceLock(state_root, service, "").inspect()
    except OSError:
        holder = None
    return {
        "backup": journal.backup,
        "state": journal.state,
        "started_at": journal.started_at,
        "reason": journal.reason,
        "incident_id": journal.incident_id,
        "in_progress": holder is not None and holder.held,
        "held_by": f"{holder.purpose} (pid {holder.pid})" if holder is not None and holder.held else None,
    }
