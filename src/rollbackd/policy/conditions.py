"""Whether a rule's signal is active for a service now, read from the probes' observations.

Each signal is a function of a ``ServiceView`` (the observations since the last recovery, the deploy window,
blocked revisions, a clock reading) and the rule (threshold, for-duration). It returns a ``Reading`` with the
evidence and one sentence saying why, or None. This module is the only place that knows which observation
fields mean what.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rollbackd.observation import Observation, Runs
from rollbackd.policy.rules import Rule
from rollbackd.policy.signals import consecutive_failures, percentile, sustained, sustained_newest_first, within
from rollbackd.units import format_duration, human_size


@dataclass(frozen=True)
class DeployWindow:
    deploy_id: int
    opened_at: float
    closes_at: float
    trigger: str
    from_revision: str | None
    pre_deploy_backup: str | None
    code_commit: str | None = None
    schema_fingerprint: str | None = None  # the schema the probe saw before the deploy began


@dataclass(frozen=True)
class ServiceView:
    """What the policy may know about one service at one instant."""

    service: str
    now: float
    observations: Mapping[str, Sequence[Observation]]  # per probe, oldest first, since the last recovery
    deploy: DeployWindow | None = None
    blocked: frozenset[str] = frozenset()
    arrived: frozenset[str] = frozenset()  # revisions whose scripts arrived in the versions dir since the last recovery
    service_pid: int | None = None
    # per probe, when its inconclusive runs (taken while the daemon itself lagged) started; they are not in
    # ``observations``, and a rule whose window holds more of them than conclusive runs cannot fire
    inconclusive: Mapping[str, Sequence[float]] = field(default_factory=dict)

    def recent(self, probe: str) -> Sequence[Observation]:
        return self.observations.get(probe, ())

    def latest(self, probe: str) -> Observation | None:
        observations = self.recent(probe)
        return observations[-1] if observations else None


@dataclass(frozen=True)
class Reading:
    signal: str
    since: float
    explanation: str
    evidence: dict[str, Any] = field(default_factory=dict)


Condition = Callable[[ServiceView, Rule], Reading | None]

CORRUPTION = ("corrupt", "not_a_database")


def _failing(reason: str | None = None) -> Callable[[Observation], bool]:
    def predicate(observation: Observation) -> bool:
        return not observation.ok and (reason is None or observation.reason == reason)

    return predicate


def health_failing(view: ServiceView, rule: Rule) -> Reading | None:
    observations = view.recent("health")
    since = sustained(observations, _failing(), view.now, rule.for_)
    if since is None or database_gone(view):
        return None
    last = observations[-1]
    return Reading(
        "health_failing",
        since,
        f"health check failing for {format_duration(view.now - since)} ({last.reason})",
        {"reason": last.reason, "detail": dict(last.detail), "failures": consecutive_failures(observations)},
    )


def process_down(view: ServiceView, rule: Rule) -> Reading | None:
    observations = view.recent("process")
    since = sustained(
        observations, lambda o: not o.ok and o.reason in ("not_running", "zombie", "no_pid"), view.now, rule.for_
    )
    if since is None or database_gone(view):
        return None
    last = observations[-1]
    return Reading("process_down", since, f"service process down ({last.reason})", {"detail": dict(last.detail)})


def integrity_failed(view: ServiceView, rule: Rule) -> Reading | None:
    observations = view.recent("integrity")
    since = sustained(observations, lambda o: not o.ok and o.reason in CORRUPTION, view.now, rule.for_)
    if since is None:
        return None
    last = observations[-1]
    errors = last.detail.get("errors") or [last.detail.get("error")]
    return Reading(
        "integrity_failed",
        since,
        f"the database failed its {last.detail.get('check', 'integrity')} check: {str(errors[0])[:120]}",
        {"detail": dict(last.detail), **before_fault(view, since)},
    )


def foreign_key_violation(view: ServiceView, rule: Rule) -> Reading | None:
    observations = view.recent("integrity")
    since = sustained(observations, _failing("foreign_key_violation"), view.now, rule.for_)
    if since is None:
        return None
    last = observations[-1]
    return Reading(
        "foreign_key_violation",
        since,
        "PRAGMA foreign_key_check found violations",
        {"detail": dict(last.detail), **before_fault(view, since)},
    )


def before_fault(view: ServiceView, since: float) -> dict[str, Any]:
    """What was known before a fault first showed at ``since``: when the database was last proven good (its newest
    passing quick_check/integrity_check and foreign_key_check) and the last row counts, for a point-in-time
    restore to go back to that moment and to estimate the rows it loses."""
    proven = [
        observation.started_at
        for observation in view.recent("integrity")
        if observation.started_at < since and observation.reason in ("", "missing_index")
    ]
    counts: Mapping[str, Any] = {}
    for observation in view.recent("rows"):
        if observation.started_at < since and observation.reason != "unavailable":
            counts = _mapping(observation.detail.get("counts"))
    return {
        "first_failed_at": since,
        "proven_good_at": max(proven) if proven else None,
        "rows_before": {table: count for table, count in counts.items() if isinstance(count, int)},
    }


def _file_gone(observation: Observation) -> bool:
    """The probe could not open the database because the file is not there (the integrity probe says so with a
    reason of its own; the lock probe, which runs more often, with its error)."""
    if observation.ok:
        return False
    if observation.probe == "integrity":
        return observation.reason == "missing"
    error = str(observation.detail.get("error", ""))
    sidecar = any(f"{suffix}'" in error for suffix in ("-shm", "-wal", "-journal"))  # the db's own file, not these
    return observation.reason == "unavailable" and "No such file or directory" in error and not sidecar


def _gone_evidence(view: ServiceView) -> Iterator[Observation]:
    """The integrity and lock probes' runs, newest first, when the integrity probe has seen this database before
    (an ok run, or its own ``missing``, in view): a database never seen (a service not set up yet) is not gone.
    Merged lazily from the newest end (the rules read a streak there, after every observation); ties in start
    time as a stable sort of integrity's runs, then the lock's, would order them."""
    integrity = view.recent("integrity")
    if not any(o.ok or o.reason == "missing" for o in integrity):
        return iter(())
    lock = view.recent("sqlite_lock")
    if isinstance(integrity, Runs) and isinstance(lock, Runs):  # each in start order
        return heapq.merge(reversed(lock), reversed(integrity), key=_started_at, reverse=True)
    return reversed(sorted([*integrity, *lock], key=_started_at))


def database_gone(view: ServiceView) -> bool:
    """The newest evidence says the database file has vanished: a restart cannot bring it back, so the rules
    that would restart the service leave it to ``database-missing``."""
    newest = next(_gone_evidence(view), None)
    return newest is not None and _file_gone(newest)


def database_missing(view: ServiceView, rule: Rule) -> Reading | None:
    """The database file is gone (its folder wiped, a lost disk): the integrity probe cannot even stat it, or the
    lock probe (every few seconds, where integrity runs every minute) finds no file where it was checked before."""
    evidence = _gone_evidence(view)
    last = next(evidence, None)
    if last is None:
        return None
    since = sustained_newest_first(itertools.chain((last,), evidence), _file_gone, view.now, rule.for_)
    if since is None:
        return None
    return Reading(
        "database_missing",
        since,
        f"the database file is gone ({str(last.detail.get('error', ''))[:120]})",
        {"detail": dict(last.detail), **before_fault(view, since)},
    )


def schema_ahead(view: ServiceView, rule: Rule) -> Reading | None:
    observations = view.recent("schema")
    since = sustained(observations, lambda o: _schema_state(o) in ("db_ahead", "unknown_revision"), view.now, rule.for_)
    if since is None:
        return None
    last = observations[-1]
    return Reading(
        "schema_ahead",
        since,
        f"database at revision {last.detail.get('db_revision')} but the code's head is "
        f"{_heads(last)} ({_schema_state(last)})",
        {"state": _schema_state(last), "db_revision": last.detail.get("db_revision"), "code_heads": _heads(last)},
    )


def migration_failed(view: ServiceView, rule: Rule) -> Reading | None:
    """In a deploy window the code's head moved but the database did not follow, and the schema or the foreign
    keys changed anyway: the upgrade ran and failed half way (SQLite DDL is not transactional in Alembic)."""
    if view.deploy is None:
        return None
    observations = view.recent("schema")
    since = sustained(observations, lambda o: _schema_state(o) == "db_behind", view.now, rule.for_)
    if since is None:
        return None
    last = observations[-1]
    evidence: dict[str, Any] = {"db_revision": last.detail.get("db_revision"), "code_heads": _heads(last)}
    reasons = []
    fingerprint = last.detail.get("schema_fingerprint")
    reference = view.deploy.schema_fingerprint
    if fingerprint and reference and fingerprint != reference:
        reasons.append("the schema differs from the pre-deploy backup's")
        evidence["schema_fingerprint"] = fingerprint
    integrity = view.latest("integrity")
    if integrity is not None and integrity.reason == "foreign_key_violation":
        reasons.append("foreign keys are broken")
        evidence["integrity"] = dict(integrity.detail)
    if not reasons:
        return None
    return Reading(
        "migration_failed",
        since,
        f"migration to {_heads(last)} failed at {last.detail.get('db_revision')}: " + " and ".join(reasons),
        evidence,
    )


def rows_dropped(view: ServiceView, rule: Rule) -> Reading | None:
    latest = view.latest("rows")
    if latest is None:
        return None
    threshold = rule.threshold if rule.threshold is not None else 0.5
    drops = {
        table: ratio
        for table, ratio in _mapping(latest.detail.get("drop_ratio_since_revision_change")).items()
        if isinstance(ratio, int | float) and ratio >= threshold
    }
    if not drops:
        return None
    baseline = _mapping(latest.detail.get("baseline"))
    counts = _mapping(latest.detail.get("counts"))
    described = ", ".join(f"{table} {baseline.get(table)} → {counts.get(table)}" for table in sorted(drops))
    return Reading(
        "rows_dropped",
        latest.started_at,
        f"data loss after migration to {latest.detail.get('revision')}: {described}",
        {
            "drops": drops,
            "baseline": baseline,
            "counts": counts,
            "revision": latest.detail.get("revision"),
            "baseline_revision": latest.detail.get("baseline_revision"),
        },
    )


def latency_high(view: ServiceView, rule: Rule) -> Reading | None:
    """p95 of the slowest path over the last ``for`` seconds above the threshold, with history covering them."""
    threshold = rule.threshold if rule.threshold is not None else 5.0
    observations = view.recent("latency")
    if not observations or observations[0].started_at > view.now - rule.for_:
        return None
    window = within(observations, view.now, rule.for_)
    if len(window) < 2:
        return None
    p95 = percentile([_latency(observation) for observation in window], 0.95)
    if p95 is None or p95 <= threshold:
        return None
    return Reading(
        "latency_high",
        window[0].started_at,
        f"p95 latency {p95 * 1000:.0f} ms over {format_duration(rule.for_)} (bound {threshold * 1000:.0f} ms)",
        {"p95": p95, "threshold": threshold, "samples": len(window)},
    )


def slow_with_missing_index(view: ServiceView, rule: Rule) -> Reading | None:
    integrity = view.latest("integrity")
    missing = list(integrity.detail.get("missing_vs_previous_revision") or []) if integrity else []
    if not missing:
        return None
    slow = latency_high(view, rule)
    if slow is None:
        return None
    return Reading(
        "slow_with_missing_index",
        slow.since,
        f"{slow.explanation} and index {', '.join(missing)} vanished with the last migration",
        {**slow.evidence, "missing_indexes": missing},
    )


def write_lock_held(view: ServiceView, rule: Rule) -> Reading | None:
    latest = view.latest("sqlite_lock")
    if latest is None:
        return None
    held = float(latest.values.get("held_seconds", 0.0))
    threshold = rule.threshold if rule.threshold is not None else 60.0
    if held < threshold:
        return None
    holders = [holder for holder in latest.detail.get("holders") or () if isinstance(holder, Mapping)]
    pids = [holder.get("pid") for holder in holders]
    if rule.acts and (view.service_pid is None or view.service_pid not in pids):
        return None  # only the service's own stuck writer is restarted; anyone else's is alerted on
    named = ", ".join(f"pid {holder.get('pid')} ({holder.get('name')})" for holder in holders) or "an unknown process"
    return Reading(
        "write_lock_held",
        view.now - held,
        f"write lock held for {format_duration(held)} by {named}",
        {"held_seconds": held, "holders": holders},
    )


# A healthy WAL stays near SQLite's autocheckpoint size (1000 pages: 4 MiB at 4 KiB pages), so a WAL over 64 MiB
# is 16 checkpoints' worth behind; under that a small database's WAL may be "larger than the database" and still
# be nothing. Past 1 GiB the WAL is worth an alert whatever the ratio (it is read on every query, and a crash
# replays it all on the next open).
WAL_GROWING_MIN_BYTES = 64 * 1024**2
WAL_GROWING_ALWAYS_BYTES = 1024**3


def wal_growing(view: ServiceView, rule: Rule) -> Reading | None:
    """The -wal file over ``threshold`` × the database (and over WAL_GROWING_MIN_BYTES), or over
    WAL_GROWING_ALWAYS_BYTES, for ``for`` seconds, and larger at the end than at the start: a WAL file keeps its
    size after a checkpoint, so only growth says checkpoints are still starved."""
    ratio = rule.threshold if rule.threshold is not None else 1.0

    def over(observation: Observation) -> bool:
        wal = float(observation.values.get("wal_size_bytes", 0.0))
        database = float(observation.values.get("database_size_bytes", 0.0))
        return wal >= WAL_GROWING_ALWAYS_BYTES or (wal >= WAL_GROWING_MIN_BYTES and wal > ratio * database)

    observations = view.recent("sqlite_lock")
    since = sustained(observations, over, view.now, rule.for_)
    if since is None:
        return None
    run = [observation for observation in observations if observation.started_at >= since]
    first, last = (float(o.values.get("wal_size_bytes", 0.0)) for o in (run[0], run[-1]))
    if last <= first:
        return None
    database = float(run[-1].values.get("database_size_bytes", 0.0))
    readers = [reader for reader in run[-1].detail.get("wal_readers") or () if isinstance(reader, Mapping)]
    named = ", ".join(f"pid {reader.get('pid')} ({reader.get('name')})" for reader in readers)
    times = f" ({last / database:.1f}× the database)" if database else ""
    return Reading(
        "wal_growing",
        since,
        f"WAL grew from {human_size(first)} to {human_size(last)}{times} in "
        f"{format_duration(view.now - since)}; "
        + (f"read transaction held by {named}" if named else "no reader named"),
        {"wal_size_bytes": last, "database_size_bytes": database, "grew_bytes": last - first, "readers": readers},
    )


def blocked_revision_applied(view: ServiceView, rule: Rule) -> Reading | None:
    latest = view.latest("schema")
    revision = latest.detail.get("db_revision") if latest else None
    if not revision or revision not in view.blocked:
        return None
    return Reading(
        "blocked_revision_applied",
        latest.started_at if latest else view.now,
        f"blocked revision {revision} was applied again",
        {"revision": revision},
    )


def blocked_script_present(view: ServiceView, rule: Rule) -> Reading | None:
    """A blocked revision's script arrived in the versions dir again (a re-deploy of the buggy migration)."""
    present = sorted(view.arrived & view.blocked)
    if not present:
        return None
    return Reading(
        "blocked_script_present",
        view.now,
        f"blocked migration {', '.join(present)} is back in the code",
        {"revisions": present},
    )


CONDITIONS: dict[str, Condition] = {
    "blocked_revision_applied": blocked_revision_applied,
    "blocked_script_present": blocked_script_present,
    "rows_dropped": rows_dropped,
    "migration_failed": migration_failed,
    "integrity_failed": integrity_failed,
    "foreign_key_violation": foreign_key_violation,
    "schema_ahead": schema_ahead,
    "health_failing": health_failing,
    "slow_with_missing_index": slow_with_missing_index,
    "latency_high": latency_high,
    "process_down": process_down,
    "write_lock_held": write_lock_held,
    "database_missing": database_missing,
    "wal_growing": wal_growing,
}


# Probes whose evidence is about time (an answer within a timeout, a latency, a process seen now, a lock held
# "too long"): after the daemon was overloaded only what they saw since counts (policy/engine.py: view()).
TIMED_EVIDENCE = frozenset({"health", "latency", "process", "sqlite_lock"})

# The probe whose observations each signal reads (for the share of conclusive runs in its window).
SIGNAL_PROBES: dict[str, str] = {
    "blocked_revision_applied": "schema",
    "rows_dropped": "rows",
    "migration_failed": "schema",
    "integrity_failed": "integrity",
    "foreign_key_violation": "integrity",
    "schema_ahead": "schema",
    "health_failing": "health",
    "slow_with_missing_index": "latency",
    "latency_high": "latency",
    "process_down": "process",
    "write_lock_held": "sqlite_lock",
    "wal_growing": "sqlite_lock",
    "database_missing": "integrity",
}


def evaluate(rule: Rule, view: ServiceView) -> Reading | None:
    """Return the rule's reading when its signal is active and the rule applies now, else None. A reading whose
    window holds fewer conclusive runs than inconclusive ones is no reading: the evidence is mostly the daemon's
    own delay."""
    if not rule.enabled or not rule.applies(view.deploy is not None):
        return None
    reading = CONDITIONS[rule.signal](view, rule)
    probe = SIGNAL_PROBES.get(rule.signal)
    if reading is None or probe is None or not view.inconclusive.get(probe):
        return reading
    inconclusive = sum(1 for at in view.inconclusive[probe] if at >= reading.since)
    conclusive = sum(1 for observation in view.recent(probe) if observation.started_at >= reading.since)
    return reading if conclusive >= max(1, inconclusive) else None


def _schema_state(observation: Observation) -> str:
    return str(observation.detail.get("state", "unknown"))


def _heads(observation: Observation) -> str:
    heads = observation.detail.get("code_heads") or []
    return "+".join(str(head) for head in heads) or "none"


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _started_at(observation: Observation) -> float:
    return observation.started_at


def _latency(observation: Observation) -> float:
    """The slowest configured path of one latency run (a failed request counts as infinitely slow)."""
    if not observation.ok and observation.reason != "timeout":
        return float("inf")
    slowest = observation.values.get("latency")  # the probe's own summary; read for each run in the window
    if slowest is not None:
        return slowest
    values = [value for key, value in observation.values.items() if key.endswith(":latency")]
    return max(values, default=0.0)
