"""Each signal reads the probes' observations the way the runbook's engineer reads the screen."""

from __future__ import annotations

from rollbackd.config.model import ServiceConfig
from rollbackd.policy.conditions import DeployWindow, ServiceView, evaluate
from rollbackd.policy.rules import effective_rules
from tests.policy.observations import observe

DEPLOY = DeployWindow(
    1,
    schema_fingerprint="f-before",
    opened_at=50.0,
    closes_at=950.0,
    trigger="migration_arrived",
    from_revision="aaa",
    pre_deploy_backup="vbrpg_backup_20261125_120000.db",
)


def rule(service: ServiceConfig, name: str):  # type: ignore[no-untyped-def]
    return {rule.name: rule for rule in effective_rules(service)}[name]


def view(now: float, deploy: DeployWindow | None = None, **observations: list) -> ServiceView:  # type: ignore[type-arg]
    return ServiceView("vbrpg", now, observations, deploy=deploy)


def test_single_503_is_not_a_failing_service(service: ServiceConfig) -> None:
    health = [observe("health", 100, True), observe("health", 101, False, "http_5xx"), observe("health", 102, True)]
    assert evaluate(rule(service, "health-failing"), view(102.5, health=health)) is None


def test_health_failing_for_the_duration_fires_only_outside_deploys(service: ServiceConfig) -> None:
    health = [observe("health", 100 + second, False, "connect_refused") for second in range(12)]
    reading = evaluate(rule(service, "health-failing"), view(112, health=health))
    assert reading is not None
    assert "connect_refused" in reading.explanation
    assert evaluate(rule(service, "health-failing"), view(112, DEPLOY, health=health)) is None
    assert evaluate(rule(service, "post-deploy-health"), view(112, DEPLOY, health=health)) is not None


def test_data_loss_reads_drop_ratios_in_a_deploy_window(service: ServiceConfig) -> None:
    rows = [
        observe(
            "rows",
            120,
            True,
            revision="bad1",
            baseline_revision="aaa",
            baseline={"game_rooms": 100, "players": 400},
            counts={"game_rooms": 12, "players": 390},
            drop_ratio_since_revision_change={"game_rooms": 0.88, "players": 0.025},
        )
    ]
    reading = evaluate(rule(service, "data-loss"), view(121, DEPLOY, rows=rows))
    assert reading is not None
    assert reading.evidence["drops"] == {"game_rooms": 0.88}
    assert "game_rooms 100 → 12" in reading.explanation
    # Outside a deploy window a shrinking table is users deleting rooms, not a migration.
    assert evaluate(rule(service, "data-loss"), view(121, None, rows=rows)) is None


def test_schema_ahead_is_scenario_two(service: ServiceConfig) -> None:
    schema = [
        observe("schema", 100 + s, False, "db_ahead", state="db_ahead", db_revision="bbb", code_heads=["aaa"])
        for s in range(7)
    ]
    reading = evaluate(rule(service, "schema-ahead"), view(106, schema=schema))
    assert reading is not None
    assert reading.evidence == {"state": "db_ahead", "db_revision": "bbb", "code_heads": "aaa"}


def test_migration_failed_needs_evidence_not_just_a_pending_upgrade(service: ServiceConfig) -> None:
    def schema(fingerprint: str) -> list:  # type: ignore[type-arg]
        return [
            observe(
                "schema",
                100 + s,
                False,
                "db_behind",
                state="db_behind",
                db_revision="aaa",
                code_heads=["bad1"],
                schema_fingerprint=fingerprint,
            )
            for s in range(12)
        ]

    # Code arrived, upgrade not run yet: same schema as before the deploy, nothing failed.
    assert evaluate(rule(service, "migration-failed"), view(112, DEPLOY, schema=schema("f-before"))) is None
    reading = evaluate(rule(service, "migration-failed"), view(112, DEPLOY, schema=schema("f-partial")))
    assert reading is not None
    assert "schema differs" in reading.explanation


def test_slow_after_index_drop_needs_both_latency_and_the_vanished_index(service: ServiceConfig) -> None:
    latency = [observe("latency", 100 + s, True, values={"/api/rooms/ABC123:latency": 2.5}) for s in range(15)]
    integrity = [
        observe(
            "integrity", 110, False, "missing_index", missing_vs_previous_revision=["ix_game_room_participants_room_id"]
        )
    ]
    slow = rule(service, "slow-after-index-drop")
    reading = evaluate(slow, view(114, DEPLOY, latency=latency, integrity=integrity))
    assert reading is not None
    assert reading.evidence["missing_indexes"] == ["ix_game_room_participants_room_id"]
    assert evaluate(slow, view(114, DEPLOY, latency=latency)) is None
    fast = [observe("latency", 100 + s, True, values={"/api/rooms/ABC123:latency": 0.05}) for s in range(15)]
    assert evaluate(slow, view(114, DEPLOY, latency=fast, integrity=integrity)) is None


def test_latency_reads_the_slowest_path_whether_the_run_gives_its_summary_or_only_its_paths(
    service: ServiceConfig,
) -> None:
    """The latency probe gives each run's slowest path as ``latency``; the rule reads that, and the paths'
    own values when it is absent, to the same p95."""
    paths = {"/api/rooms/ABC123:latency": 0.2, "/api/players:latency": 6.0}
    only_paths = [observe("latency", 100 + s, True, values=dict(paths)) for s in range(70)]
    summarised = [observe("latency", 100 + s, True, values={**paths, "latency": 6.0}) for s in range(70)]
    slow = rule(service, "slow-after-deploy")
    by_paths, by_summary = (evaluate(slow, view(169, DEPLOY, latency=runs)) for runs in (only_paths, summarised))
    assert by_paths is not None and by_summary is not None
    assert by_paths.evidence == by_summary.evidence and by_summary.evidence["p95"] == 6.0


def test_latency_jitter_under_the_threshold_is_quiet(service: ServiceConfig) -> None:
    jitter = [
        observe("latency", 100 + s, True, values={"/api/rooms/ABC123:latency": 0.3 if s % 7 else 4.0})
        for s in range(120)
    ]
    assert evaluate(rule(service, "slow-no-deploy"), view(219, latency=jitter)) is None


def test_write_lock_restart_only_for_the_service_itself(service: ServiceConfig) -> None:
    lock = [
        observe(
            "sqlite_lock",
            400,
            False,
            "lock_held",
            values={"held": 1, "held_seconds": 320.0},
            holders=[{"pid": 4242, "name": "python"}],
        )
    ]
    stuck = rule(service, "write-lock-stuck")
    assert evaluate(stuck, ServiceView("vbrpg", 401, {"sqlite_lock": lock}, service_pid=4242)) is not None
    assert evaluate(stuck, ServiceView("vbrpg", 401, {"sqlite_lock": lock}, service_pid=1)) is None
    assert evaluate(rule(service, "write-lock-held"), ServiceView("vbrpg", 401, {"sqlite_lock": lock})) is not None


def test_blocked_revision_applied_again(service: ServiceConfig) -> None:
    schema = [observe("schema", 100, True, state="in_sync", db_revision="bad1", code_heads=["bad1"])]
    applied = rule(service, "blocked-revision-applied")
    assert evaluate(applied, ServiceView("vbrpg", 101, {"schema": schema}, blocked=frozenset({"bad1"}))) is not None
    assert evaluate(applied, ServiceView("vbrpg", 101, {"schema": schema})) is None


def test_a_corruption_says_when_the_database_was_last_proven_good_and_its_rows_then(service: ServiceConfig) -> None:
    integrity = [
        observe("integrity", 100, True),
        observe("integrity", 160, True, values={"errors": 0.0}),
        observe("integrity", 220, False, "corrupt", errors=["page 4 is never used"]),
        observe("integrity", 221, False, "corrupt", errors=["page 4 is never used"]),
    ]
    rows = [
        observe("rows", 150, True, counts={"players": 40, "game_rooms": 5}),
        observe("rows", 210, True, counts={"players": 44, "game_rooms": 5}),
        observe("rows", 221, False, "unavailable"),
    ]
    reading = evaluate(rule(service, "integrity-failed"), view(222, integrity=integrity, rows=rows))
    assert reading is not None
    assert reading.evidence["proven_good_at"] == 160
    assert reading.evidence["first_failed_at"] == 220
    assert reading.evidence["rows_before"] == {"players": 44, "game_rooms": 5}
    # No passing check in view (just after a recovery): only the first failure is known.
    only_failures = evaluate(rule(service, "integrity-failed"), view(222, integrity=integrity[2:]))
    assert only_failures is not None and only_failures.evidence["proven_good_at"] is None


def test_a_vanished_database_is_database_missing_not_a_restart(service: ServiceConfig) -> None:
    """A wiped data dir makes health fail too (the service cannot open its database); a restart cannot bring the
    file back, so health-failing and process-down leave it to database-missing, which the lock probe's runs (every
    few seconds) can prove before the integrity probe's next one (every minute)."""
    gone = "[Errno 2] No such file or directory: '/opt/vbrpg/backend/data/vbrpg.db'"
    integrity = [observe("integrity", 40, True)]
    lock = [observe("sqlite_lock", 100 + second, False, "unavailable", error=gone) for second in range(0, 12, 2)]
    health = [observe("health", 100 + second, False, "http_5xx") for second in range(12)]
    process = [observe("process", 100 + second, False, "not_running") for second in range(12)]
    seen = view(112, integrity=integrity, sqlite_lock=lock, health=health, process=process)

    assert evaluate(rule(service, "health-failing"), seen) is None
    assert evaluate(rule(service, "process-down"), seen) is None
    reading = evaluate(rule(service, "database-missing"), seen)
    assert reading is not None and reading.since == 100
    # A database never seen (a service not set up yet) is not "gone": health-failing restarts as before.
    unseen = view(112, sqlite_lock=lock, health=health)
    assert evaluate(rule(service, "database-missing"), unseen) is None
    assert evaluate(rule(service, "health-failing"), unseen) is not None
    # The -shm vanishing (the service closed its last connection) is not the database gone.
    shm = [observe("sqlite_lock", 100 + s, False, "unavailable", error=gone[:-2] + "-shm'") for s in range(0, 12, 2)]
    assert evaluate(rule(service, "database-missing"), view(112, integrity=integrity, sqlite_lock=shm)) is None
