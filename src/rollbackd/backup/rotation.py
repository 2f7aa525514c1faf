"""Which backups to keep: grandfather-father-son retention as a pure function of the list and the time.

``plan_rotation`` decides, ``prune_backups`` acts. Rules, each independent (a backup kept by one rule may also
satisfy another, as in restic): the ``keep_last`` newest; the newest backup in each of the ``keep_hourly`` /
``keep_daily`` / ``keep_weekly`` most recent UTC hours / days / ISO weeks that have a backup; pre-deploy backups
younger than the deploy window; the newest verified backup overall; the newest verified backup of each revision
a downgrade can still reach; names the caller pins (the recorded pre-deploy backup). Unverified files are never
counted as keepers and never deleted automatically: they are reported for a person to look at.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from rollbackd.backup.catalog import BackupEntry, BackupListing, list_backups
from rollbackd.backup.manifest import manifest_path
from rollbackd.backup.snapshot import remove_stale_partials
from rollbackd.config.model import ServiceConfig
from rollbackd.host.atomic_files import fsync_dir
from rollbackd.metrics import Metrics

log = logging.getLogger(__name__)

Action = Literal["keep", "remove", "unverified"]


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    deploy_window: float = 0.0

    @classmethod
    def of(cls, service: ServiceConfig) -> RetentionPolicy:
        b = service.backups
        return cls(b.keep_last, b.keep_hourly, b.keep_daily, b.keep_weekly, service.deploy.window)


@dataclass(frozen=True)
class RotationDecision:
    name: str
    action: Action
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class RotationPlan:
    decisions: tuple[RotationDecision, ...]  # oldest first, as the listing

    def names(self, action: Action) -> list[str]:
        return [decision.name for decision in self.decisions if decision.action == action]

    @property
    def keep(self) -> list[str]:
        return self.names("keep")

    @property
    def remove(self) -> list[str]:
        return self.names("remove")

    @property
    def unverified(self) -> list[str]:
        return self.names("unverified")


def _hour(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H")


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


PERIODS: tuple[tuple[str, Callable[[datetime], str]], ...] = (("hourly", _hour), ("daily", _day), ("weekly", _week))


def plan_rotation(
    backups: Sequence[BackupEntry],
    policy: RetentionPolicy,
    *,
    now: float,
    reachable_revisions: Collection[str] = (),
    pinned: Mapping[str, str] | None = None,
) -> RotationPlan:
    """Given the backups and the time, return keep/remove/unverified for each, with the reasons."""
    reasons: dict[str, list[str]] = {entry.name: [] for entry in backups}
    verified = sorted((entry for entry in backups if entry.verified), key=lambda e: (e.created_at, e.name))
    newest_first = list(reversed(verified))

    if newest_first:
        reasons[newest_first[0].name].append("newest verified backup")
    for entry in newest_first[: policy.keep_last]:
        reasons[entry.name].append(f"one of the last {policy.keep_last}")
    counts = {"hourly": policy.keep_hourly, "daily": policy.keep_daily, "weekly": policy.keep_weekly}
    for label, period_of in PERIODS:
        limit = counts[label]
        seen: set[str] = set()
        for entry in newest_first:
            period = period_of(datetime.fromtimestamp(entry.created_at, UTC))
            if period in seen:
                continue
            seen.add(period)
            if len(seen) > limit:
                break
            reasons[entry.name].append(f"{label} {period}")
    for entry in verified:
        if entry.reason == "pre-deploy" and now - entry.created_at <= policy.deploy_window:
            reasons[entry.name].append("pre-deploy backup inside the deploy window")
        if entry.created_at > now:
            reasons[entry.name].append("dated in the future (clock skew): kept")
    for revision in sorted(reachable_revisions):
        of_revision = [entry for entry in newest_first if entry.revision == revision]
        if of_revision:
            reasons[of_revision[0].name].append(f"newest backup of reachable revision {revision}")
    for name, why in (pinned or {}).items():
        if name in reasons:
            reasons[name].append(why)

    decisions = []
    for entry in backups:
        if not entry.verified:
            decisions.append(RotationDecision(entry.name, "unverified", (entry.problem or "unverified",)))
        elif reasons[entry.name]:
            decisions.append(RotationDecision(entry.name, "keep", tuple(reasons[entry.name])))
        else:
            decisions.append(RotationDecision(entry.name, "remove", ("no retention rule keeps it",)))
    return RotationPlan(tuple(decisions))


@dataclass(frozen=True)
class PruneResult:
    plan: RotationPlan
    removed: tuple[str, ...]
    orphan_manifests_removed: tuple[str, ...]
    dry_run: bool


def prune_backups(
    service: ServiceConfig,
    *,
    now: float,
    reachable_revisions: Collection[str] = (),
    pinned: Mapping[str, str] | None = None,
    dry_run: bool = False,
    metrics: Metrics | None = None,
    listing: BackupListing | None = None,
) -> PruneResult:
    """Apply the retention policy to the service's backup dir (or only report it with ``dry_run``)."""
    backup_dir = service.backups.dir
    stem = service.database.stem
    listing = listing or list_backups(backup_dir, stem)
    plan = plan_rotation(
        listing.backups, RetentionPolicy.of(service), now=now, reachable_revisions=reachable_revisions, pinned=pinned
    )
    if dry_run:
        return PruneResult(plan, tuple(plan.remove), tuple(path.name for path in listing.orphan_manifests), True)
    keepers = set(plan.keep)
    if listing.verified and not keepers:
        raise AssertionError("rotation would remove every verified backup")  # plan_rotation never does this
    removed = []
    for entry in listing.backups:
        if entry.name not in plan.remove:
            continue
        entry.path.unlink(missing_ok=True)  # the backup first: a crash leaves an orphan manifest, not a bare .db
        manifest_path(entry.path).unlink(missing_ok=True)
        removed.append(entry.name)
        log.info("rotation removed backup %s", entry.name)
    orphans = []
    for path in listing.orphan_manifests:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            orphans.append(path.name)
    if backup_dir.is_dir():
        remove_stale_partials(backup_dir, stem)
        if removed or orphans:
            fsync_dir(backup_dir)
    if metrics is not None and removed:
        metrics.backups_pruned.labels(service=service.name).inc(len(removed))
    return PruneResult(plan, tuple(removed), tuple(orphans), False)
