"""The runbook as data: which signal, held how long, leads to which ladder of actions.

Built-in rules encode the runbook (DESIGN.md's "runbook as default policy" table, and the runbook's "DO NOT
rollback" list). A config ``[[service.rules]]`` entry with a built-in name changes only the keys it sets, or
``enabled = false`` turns the rule off; an entry with a new name adds a rule (it must name a signal and an
action). Rules are plain frozen data; ``conditions.py`` decides whether a rule's signal is active.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from rollbackd.config.model import RuleConfig, ServiceConfig

RungKind = Literal["restart", "stop", "downgrade", "restore", "hold", "alert"]
When = Literal["always", "deploy_window", "no_deploy"]

# A rung's target is resolved when it runs (actions/executor.py): a downgrade goes to "pre_deploy", "code_head",
# "-N" steps or "to:REV"; a restore uses "pre_deploy", "newest_verified", "at_code_head", "backup:NAME" or
# "revision:REV"; or, with replication configured, a point in time from the replica: "replica:proven_good" (the
# last moment the database was proven good), "replica:pre_deploy" (just before the upgrade began; outside a deploy
# the same as proven_good) or "replica:newest" (all it holds), each falling back to a local backup (REPLICA_FALLBACK)
# when the replica cannot give that moment.
REPLICA_FALLBACK = {
    "replica:proven_good": "newest_verified",
    "replica:pre_deploy": "pre_deploy",
    "replica:newest": "newest_verified",
}


@dataclass(frozen=True)
class Rung:
    kind: RungKind
    target: str | None = None  # downgrade: a DOWNGRADE_TARGETS value; restore: a RESTORE_SOURCES value
    block_revision: bool = False  # after this rung succeeds, refuse the rolled-back revision from now on

    def describe(self) -> str:
        if self.kind == "downgrade":
            return {
                "pre_deploy": "downgrade to the pre-deploy revision",
                "code_head": "downgrade to the code's head",
            }.get(self.target or "", "downgrade one revision")
        if self.kind == "restore":
            source = {
                "pre_deploy": "the pre-deploy backup",
                "newest_verified": "the newest verified backup",
                "at_code_head": "the newest verified backup at the code's head",
                "replica:proven_good": "the replica's last moment proven good (else the newest verified backup)",
                "replica:pre_deploy": "the replica's moment before the upgrade, outside a deploy its last moment "
                "proven good (else the pre-deploy backup)",
                "replica:newest": "the replica's newest moment (else the newest verified backup)",
            }.get(self.target or "", "a backup")
            target = self.target or ""
            if target.startswith(("replica:at:", "before:")):
                moment = datetime.fromtimestamp(float(target.split(":")[-1]), UTC).isoformat(timespec="seconds")
                source = (
                    f"the replica's point at {moment} (else the newest verified backup before it)"
                    if target.startswith("replica:")
                    else f"the newest verified backup before {moment}"
                )
            return f"restore {source}" + (" and block the revision" if self.block_revision else "")
        return {"hold": "HOLD and alert", "alert": "alert only", "stop": "stop the service"}.get(self.kind, self.kind)


HOLD = Rung("hold")


@dataclass(frozen=True)
class Rule:
    name: str
    signal: str
    ladder: tuple[Rung, ...]
    description: str
    priority: int
    threshold: float | None = None
    for_: float = 0.0
    when: When = "always"
    enabled: bool = True
    hold_after: bool = False  # even after a verified recovery, stay in HOLD until a person resumes
    # May start its first action while the daemon itself is overloaded: its evidence is a completed check's
    # verdict read from the database (a corruption, broken foreign keys, counted rows gone, a revision), which the
    # daemon's own lag cannot fake. Rules judging time (health, latency, a process, a lock held "too long", a
    # migration that "did not follow" in time) wait until the daemon is calm. README: "When rollbackd is the sick one".
    acts_while_overloaded: bool = False

    @property
    def action(self) -> RungKind:
        return self.ladder[0].kind if self.ladder else "alert"

    @property
    def acts(self) -> bool:
        """True when the rule changes something (not alert-only)."""
        return any(rung.kind not in ("alert", "hold") for rung in self.ladder)

    def applies(self, in_deploy_window: bool) -> bool:
        if self.when == "deploy_window":
            return in_deploy_window
        if self.when == "no_deploy":
            return not in_deploy_window
        return True


def builtin_rules(service: ServiceConfig) -> tuple[Rule, ...]:
    """The runbook's policy for one service (thresholds that come from other config keys are filled in here)."""
    rules = _runbook_rules(service)
    if service.replication is None:
        return rules
    return tuple(
        replace(rule, ladder=_with_replica(rule.ladder, missing=rule.signal == "database_missing")) for rule in rules
    )


def _with_replica(ladder: tuple[Rung, ...], *, missing: bool = False) -> tuple[Rung, ...]:
    """With replication, a restore goes first to the replica's point in time, then (if that restore fails its
    verification) to the local backup the runbook names, as before."""
    rungs: list[Rung] = []
    for rung in ladder:
        point = {"newest_verified": "replica:proven_good", "pre_deploy": "replica:pre_deploy"}.get(rung.target or "")
        if missing:
            point = "replica:newest"  # the file is gone: all the replica holds, which is newer than any backup
        if rung.kind == "restore" and point is not None:
            rungs.append(replace(rung, target=point))
        rungs.append(rung)
    return tuple(rungs)


def _runbook_rules(service: ServiceConfig) -> tuple[Rule, ...]:
    bound = service.verify.latency_bound
    return (
        Rule(
            "blocked-revision-applied",
            "blocked_revision_applied",
            (Rung("restore", "pre_deploy"), HOLD),
            "A revision blocked after data loss was applied again: stop it, restore, and hold for a person "
            "(runbook Scenario 3: DO NOT run the migration again until the bug is fixed).",
            priority=100,
            hold_after=True,
            acts_while_overloaded=True,
        ),
        Rule(
            "blocked-revision-arrived",
            "blocked_script_present",
            (HOLD,),
            "A migration blocked after data loss reappeared in the code: it was moved out of the versions dir "
            "before it could run; hold for a person (runbook Scenario 3: DO NOT run the migration again).",
            priority=95,
        ),
        Rule(
            "data-loss",
            "rows_dropped",
            (Rung("restore", "pre_deploy", block_revision=True), HOLD),
            "Rows dropped across a revision change: stop at once, restore the pre-migration backup, block the "
            "revision (runbook Scenario 3).",
            priority=90,
            threshold=0.5,
            when="deploy_window",
            acts_while_overloaded=True,
        ),
        Rule(
            "migration-failed",
            "migration_failed",
            (Rung("downgrade", "pre_deploy"), Rung("restore", "pre_deploy"), HOLD),
            "A migration failed during deployment, leaving a partial schema or broken foreign keys: downgrade to "
            "the pre-deploy revision, else restore the pre-deploy backup (runbook Scenario 1).",
            priority=85,
            for_=10.0,
            when="deploy_window",
        ),
        Rule(
            "database-missing",
            "database_missing",
            (Rung("restore", "newest_verified"), HOLD),
            "The database file is gone (a lost disk, a wiped data dir): restore the newest verified backup, "
            "else hold; rollbackd never creates an empty database in its place.",
            priority=82,
            for_=2.0,
            acts_while_overloaded=True,  # a file gone from the disk is a fact, not a deadline the daemon missed
        ),
        Rule(
            "integrity-failed",
            "integrity_failed",
            (Rung("restore", "newest_verified"), HOLD),
            "PRAGMA integrity_check failed: stop, keep the damaged file, restore the newest verified backup "
            "(runbook section 3).",
            priority=80,
            acts_while_overloaded=True,
        ),
        Rule(
            "foreign-key-violation",
            "foreign_key_violation",
            (Rung("restore", "pre_deploy"), HOLD),
            "PRAGMA foreign_key_check found inconsistencies: restore from backup (runbook Scenario 1, step 3).",
            priority=75,
            for_=10.0,
            acts_while_overloaded=True,
        ),
        Rule(
            "schema-ahead",
            "schema_ahead",
            (Rung("downgrade", "code_head"), Rung("restore", "at_code_head"), HOLD),
            "The database is at a revision the code does not have (code rolled back, migration kept): downgrade "
            "to the code's head (runbook Scenario 2).",
            priority=70,
            for_=5.0,
            acts_while_overloaded=True,
        ),
        Rule(
            "post-deploy-health",
            "health_failing",
            (Rung("downgrade", "pre_deploy"), Rung("restore", "pre_deploy"), HOLD),
            "Post-deployment health checks fail: downgrade to the pre-deploy revision, then restore if still failing.",
            priority=60,
            for_=10.0,
            when="deploy_window",
        ),
        Rule(
            "slow-after-index-drop",
            "slow_with_missing_index",
            (Rung("downgrade", "-1"), HOLD),
            "API latency over the bound after a migration removed an index: downgrade one revision (runbook "
            "Scenario 4).",
            priority=55,
            threshold=bound,
            for_=10.0,
            when="deploy_window",
        ),
        Rule(
            "slow-after-deploy",
            "latency_high",
            (Rung("downgrade", "pre_deploy"), HOLD),
            "Slow API responses (> 5 s) after deployment: downgrade to the pre-deploy revision (runbook Scenario 4).",
            priority=50,
            threshold=5.0,
            for_=60.0,
            when="deploy_window",
        ),
        Rule(
            "process-down",
            "process_down",
            (Rung("restart"), HOLD),
            "The service process is gone and nothing was deployed: restart it; no schema change to undo.",
            priority=45,
            for_=1.0,
            when="no_deploy",
        ),
        Rule(
            "health-failing",
            "health_failing",
            (Rung("restart"), HOLD),
            "Health checks fail with no recent deploy: restart; if still failing, hold and alert (no schema change "
            "to undo).",
            priority=40,
            for_=10.0,
            when="no_deploy",
        ),
        Rule(
            "write-lock-stuck",
            "write_lock_held",
            (Rung("restart"), HOLD),
            "The service itself has held the database write lock for minutes: restart it.",
            priority=35,
            threshold=300.0,
        ),
        Rule(
            "write-lock-held",
            "write_lock_held",
            (Rung("alert"),),
            "A writer holds the database write lock past the threshold: alert.",
            priority=20,
            threshold=60.0,
        ),
        Rule(
            "wal-growing",
            "wal_growing",
            (Rung("alert"),),
            "The WAL keeps growing past the database's own size (a long reader starving checkpoints): alert only, "
            "naming the reader (runbook: DO NOT roll back for non-critical performance issues).",
            priority=15,
            threshold=1.0,  # WAL size / database size; see conditions.wal_growing for the size floor and cap
            for_=600.0,
        ),
        Rule(
            "slow-no-deploy",
            "latency_high",
            (Rung("alert"),),
            "Latency is high but nothing was deployed: alert only (runbook: DO NOT roll back for non-critical "
            "performance issues).",
            priority=10,
            threshold=5.0,
            for_=60.0,
            when="no_deploy",
        ),
    )


def effective_rules(service: ServiceConfig) -> tuple[Rule, ...]:
    """Return the service's rules: built-ins with config overrides applied, plus config-only rules, by priority.

    The config has already checked signal names and that a new rule names both a signal and an action.
    """
    rules = {rule.name: rule for rule in builtin_rules(service)}
    for override in service.rules:
        base = rules.get(override.name)
        if base is None:
            if override.signal is None:  # RuleConfig refuses this; kept so the type is proven here too
                raise ValueError(f"rule {override.name!r} needs a signal")
            base = Rule(override.name, override.signal, (), f"Configured rule {override.name}.", priority=30)
        rules[override.name] = _apply(base, override)
    return tuple(sorted(rules.values(), key=lambda rule: -rule.priority))


def _apply(rule: Rule, override: RuleConfig) -> Rule:
    changed = replace(
        rule,
        enabled=override.enabled,
        signal=override.signal or rule.signal,
        threshold=override.threshold if override.threshold is not None else rule.threshold,
        for_=override.for_ if override.for_ is not None else rule.for_,
        when=override.when or rule.when,
    )
    if override.action is None:
        return changed
    return replace(changed, ladder=_ladder_from(rule.ladder, override.action))


def _ladder_from(ladder: tuple[Rung, ...], action: str) -> tuple[Rung, ...]:
    """A new first action: keep the built-in ladder from that kind of rung on, or make a minimal one."""
    if action == "none":
        return ()
    if action in ("alert", "hold"):
        return (Rung(action),)  # type: ignore[arg-type]
    for position, rung in enumerate(ladder):
        if rung.kind == action:
            return ladder[position:]
    default_target = {"downgrade": "-1", "restore": "newest_verified"}.get(action)
    return (Rung(action, default_target), HOLD)  # type: ignore[arg-type]
