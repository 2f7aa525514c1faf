"""The policy reads the log's windows (bisection slices, a lazy merge) exactly as a full scan of every run would.

A seeded random history of every probe (passing and failing runs of every kind the rules read, latencies over and
under the bound, inconclusive runs, start times that tie, the wall clock stepping back) is appended to a real
``ObservationLog`` one run at a time. After each run the view the daemon builds (``ObservationLog.window`` →
``ServicePolicy.view``) and a reference built the plain way (every run copied out of the log and filtered one by
one, as the policy did before windows) must give every rule the same reading, or none.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from rollbackd.config.model import ServiceConfig
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation, ObservationLog
from rollbackd.policy.conditions import (
    TIMED_EVIDENCE,
    DeployWindow,
    Reading,
    ServiceView,
    _gone_evidence,
    database_gone,
    evaluate,
)
from rollbackd.policy.engine import ActionContext, ActionOutcome, ServicePolicy
from rollbackd.policy.rules import Rule, Rung, effective_rules
from rollbackd.probes import PROBE_NAMES
from rollbackd.runtime.service_runtime import LOOKBACK_MARGIN
from rollbackd.state.history import History
from rollbackd.target.verify import Expectations, Verification

GONE = "unable to open database file: [Errno 2] No such file or directory: '/srv/app/vbrpg.db'"
SIDECAR_GONE = "[Errno 2] No such file or directory: '/srv/app/vbrpg.db-wal'"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Gate:
    """The daemon's overload gate as the view reads it: only when the last overload ended."""

    def __init__(self) -> None:
        self.fresh = 0.0

    def holding(self) -> str:
        return ""

    async def calm(self) -> None:
        return None

    def fresh_since(self) -> float:
        return self.fresh


class NeverActs:
    """This test only reads the view: the policy is never asked to act or verify."""

    async def execute(self, rung: Rung, context: ActionContext) -> ActionOutcome:
        raise AssertionError("the policy acted in a test that only compares views")

    def plan(self, rung: Rung, context: ActionContext) -> list[str]:
        raise AssertionError("the policy planned in a test that only compares views")


async def never_verifies(expect: Expectations) -> Verification:
    raise AssertionError("the policy verified in a test that only compares views")


def run_of(probe: str, at: float, chance: random.Random, *, bad: bool) -> Observation:
    """One run of ``probe``: healthy, or (``bad``) one of the failures its rules read."""
    values: dict[str, float] = {}
    detail: dict[str, Any] = {}
    ok, reason = True, ""
    if probe == "latency":
        slow = chance.choice((0.004, 0.02, 6.5, 9.0)) if bad else chance.choice((0.004, 0.01))
        values = {"latency": slow} if chance.random() < 0.8 else {"/a:latency": slow, "/b:latency": slow / 2}
        if bad and chance.random() < 0.3:
            ok, reason = False, chance.choice(("timeout", "http_5xx"))
    elif probe == "sqlite_lock":
        wal = chance.choice((4e6, 70e6 + at * 1e4)) if bad else 4e6
        values = {"held_seconds": chance.choice((0.0, 90.0, 400.0)) if bad else 0.0, "wal_size_bytes": wal}
        values["database_size_bytes"] = 50e6
        detail = {"holders": [{"pid": 42, "name": "uvicorn"}], "wal_readers": []}
        if bad and chance.random() < 0.6:
            ok, reason = False, "unavailable"
            detail = {"error": chance.choice((GONE, GONE, SIDECAR_GONE, "disk I/O error"))}
    elif probe == "integrity":
        if bad:
            ok, reason = False, chance.choice(("corrupt", "foreign_key_violation", "missing", "missing_index"))
            detail = {"check": "quick", "errors": ["page 7"], "missing_vs_previous_revision": ["ix_rooms_code"]}
        else:
            detail = {"check": "quick", "missing_vs_previous_revision": chance.choice(([], ["ix_rooms_code"]))}
    elif probe == "schema":
        state = chance.choice(("db_ahead", "db_behind", "unknown_revision")) if bad else "in_sync"
        ok, reason = state == "in_sync", "" if state == "in_sync" else state
        detail = {"state": state, "db_revision": chance.choice(("r2", "bad1")), "code_heads": ["r2"]}
        detail["schema_fingerprint"] = chance.choice(("f1", "f2"))
    elif probe == "rows":
        ratio = chance.choice((0.0, 0.7)) if bad else 0.0
        detail = {
            "counts": {"players": 40},
            "baseline": {"players": 100},
            "drop_ratio_since_revision_change": {"players": ratio},
            "revision": "bad1",
        }
        if bad and chance.random() < 0.3:
            ok, reason, detail = False, "unavailable", {"error": "locked"}
    elif probe == "process":
        if bad:
            ok, reason = False, chance.choice(("not_running", "zombie", "no_pid"))
        else:
            values = {"pid": 42.0}
    elif bad:  # health
        ok, reason = False, chance.choice(("timeout", "http_5xx", "connection_refused"))
    doubt = "the daemon itself lagged" if not ok and chance.random() < 0.25 else ""
    return Observation("vbrpg", probe, ok, reason, values, detail, started_at=at, duration=0.01, inconclusive=doubt)


def history_of(seed: int, steps: int) -> list[Observation]:
    """Every probe about twice a second in random order, failing in bursts, two runs often starting at once (the
    lock and integrity probes most of all: their runs are merged), and the wall clock stepping back ``steps // 2``
    runs in (NTP after a suspend)."""
    chance = random.Random(seed)  # noqa: S311 - a reproducible history, not a secret
    at = 10_000.0
    bad = {probe: False for probe in PROBE_NAMES}
    runs = []
    for step in range(steps):
        probe = chance.choice((*PROBE_NAMES, "integrity", "sqlite_lock"))
        if chance.random() < 0.04:
            bad[probe] = not bad[probe]
        if step == steps // 2:
            at -= 45.0
        elif chance.random() > 0.2:  # else: the same start as the previous run
            at += chance.choice((0.25, 0.5, 1.0))  # exact in binary: windows often start right at a run
        runs.append(run_of(probe, at, chance, bad=bad[probe]))
    return runs


def reference_view(
    log: ObservationLog, policy: ServicePolicy, since: float, timed_since: float, now: float, **context: Any
) -> ServiceView:
    """The view by full scans: every run of every probe copied out, then each filtered one by one."""
    conclusive: dict[str, list[Observation]] = {}
    inconclusive: dict[str, list[float]] = {}
    for probe in PROBE_NAMES:
        entries = [entry for entry in log.recent("vbrpg", probe) if entry.started_at >= since]
        cut = timed_since if probe in TIMED_EVIDENCE else policy.ignore_before
        conclusive[probe] = [entry for entry in entries if not entry.inconclusive and entry.started_at >= cut]
        times = [e.started_at for e in entries if e.inconclusive and e.started_at >= policy.ignore_before]
        if times:
            inconclusive[probe] = times
    return ServiceView("vbrpg", now, conclusive, inconclusive=inconclusive, **context)


def readings(rules: tuple[Rule, ...], view: ServiceView) -> list[tuple[str, Reading | None]]:
    return [(rule.name, evaluate(rule, view)) for rule in rules]


@pytest.mark.parametrize("seed", [13, 2026])
def test_every_rule_reads_the_log_windows_as_a_full_scan_would(
    seed: int, service: ServiceConfig, tmp_path: Path
) -> None:
    builtin = effective_rules(service)
    # The runbook's rules, and the same with short durations so the sustained ones fire within the history.
    rules = builtin + tuple(replace(rule, name=f"{rule.name}-short", for_=rule.for_ / 60) for rule in builtin)
    lookback = max(rule.for_ for rule in builtin) + LOOKBACK_MARGIN
    clock, gate = Clock(0.0), Gate()
    history = History(tmp_path / "history.db")
    policy = ServicePolicy(
        service,
        rules,
        history=history,
        metrics=Metrics(CollectorRegistry()),
        runner=NeverActs(),
        verify=never_verifies,
        clock=clock,
        overload=gate,
    )
    deploy = DeployWindow(7, 10_000.0, 99_999.0, "migration", "r1", "pre.db", schema_fingerprint="f1")
    log = ObservationLog(max_per_probe=400, max_age=lookback)
    fired: set[str] = set()
    runs = history_of(seed, 1200)
    for step, run in enumerate(runs):
        log.append(run)
        clock.now = run.started_at + 0.25
        if step % 97 == 0 and step > 40:
            policy.ignore_before = runs[step - 40].started_at  # a recovery: older runs no longer count
        if step % 61 == 0 and step > 10:
            gate.fresh = runs[step - 10].started_at  # an overload just ended: older timing evidence is stale
        context: dict[str, Any] = {
            "deploy": deploy if step % 200 < 100 else None,
            "blocked": frozenset({"bad1"}),
            "service_pid": 42 if step % 3 else None,
        }
        since = max(policy.ignore_before, clock.now - lookback)
        windows = {probe: log.window("vbrpg", probe, since) for probe in PROBE_NAMES}
        view = policy.view(windows, **context)
        timed_since = max(policy.ignore_before, gate.fresh)
        reference = reference_view(log, policy, since, timed_since, clock.now, **context)

        assert {probe: list(view.recent(probe)) for probe in PROBE_NAMES} == reference.observations
        assert {probe: list(times) for probe, times in view.inconclusive.items()} == reference.inconclusive
        assert list(_gone_evidence(view)) == list(_gone_evidence(reference))
        assert database_gone(view) == database_gone(reference)
        found = readings(rules, view)
        assert found == readings(rules, reference), f"run {step}: {run}"
        fired |= {name for name, reading in found if reading is not None}
    # The history exercised the rules that read windows, streaks and the merged evidence, not only the latest run.
    assert {
        "health-failing-short",
        "post-deploy-health-short",
        "slow-no-deploy-short",
        "database-missing-short",
        "integrity-failed",
        "schema-ahead-short",
        "process-down-short",
        "write-lock-held",
    } <= fired
