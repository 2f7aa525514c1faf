"""Which backup holds the database as it was before the current deploy (``services/<name>/deploy.json``).

Written when a pre-deploy backup is taken (the watcher saw a migration arrive, or the deploy script ran
``rollbackd backup --reason pre-deploy``). When the schema probe sees the revision change without one taken inside
the deploy window, the newest verified backup from before the change stands in as the fallback. The recovery
engine restores this backup when a deploy must be undone and a downgrade is not enough.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rollbackd.backup.catalog import BackupEntry, BackupListing
from rollbackd.host.atomic_files import write_bytes_atomic

DEPLOY_RECORD = "deploy.json"


@dataclass(frozen=True)
class PreDeployRecord:
    pre_deploy_backup: str
    from_revision: str | None
    at: float
    source: str  # "watcher", "cli" (the deploy hook), "fallback" (the revision changed without one)
    to_revision: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = datetime.fromtimestamp(self.at, UTC).isoformat()
        return data


def read_pre_deploy(service_dir: Path) -> PreDeployRecord | None:
    """The recorded pre-deploy backup, or None when there is none or the record is unreadable."""
    try:
        data = json.loads((service_dir / DEPLOY_RECORD).read_text(encoding="utf-8"))
        return PreDeployRecord(
            pre_deploy_backup=str(data["pre_deploy_backup"]),
            from_revision=data["from_revision"] if isinstance(data.get("from_revision"), str) else None,
            at=datetime.fromisoformat(str(data["at"])).timestamp(),
            source=str(data.get("source", "")),
            to_revision=data["to_revision"] if isinstance(data.get("to_revision"), str) else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_pre_deploy(service_dir: Path, record: PreDeployRecord) -> None:
    text = json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(service_dir / DEPLOY_RECORD, text.encode("utf-8"))


def fallback_for_revision_change(
    listing: BackupListing,
    current: PreDeployRecord | None,
    *,
    old: str | None,
    new: str | None,
    changed_at: float,
    window: float,
) -> PreDeployRecord | None:
    """Given a revision change, return the record to write: None when a pre-deploy backup of ``old`` was taken
    inside the window before the change, else the newest verified backup from before the change (preferring one
    of revision ``old``), or None when there is no backup at all."""
    if (
        current is not None
        and current.from_revision == old
        and current.source != "fallback"
        and changed_at - window <= current.at <= changed_at
    ):
        return None
    before: list[BackupEntry] = [entry for entry in listing.verified if entry.created_at <= changed_at]
    of_old = [entry for entry in before if entry.revision == old]
    chosen = (of_old or before)[-1:]
    if not chosen:
        return None
    return PreDeployRecord(chosen[0].name, chosen[0].revision, changed_at, "fallback", new)


def pinned_pre_deploy(record: PreDeployRecord | None, *, now: float, window: float) -> dict[str, str]:
    """Names rotation must keep: the recorded pre-deploy backup while its deploy window is open."""
    if record is None or now - record.at > window:
        return {}
    return {record.pre_deploy_backup: "recorded pre-deploy backup of the open deploy window"}
