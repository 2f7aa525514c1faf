"""The per-service state machine: transitions, escalation, the flap guard, dry-run and HOLD.

The engine is tested against a real state DB (History in tmp_path) and a real metrics registry. Its two
collaborators at the boundary, the action runner and the verifier, are scripted here so each path of the
ladder can be forced; the real executor and verifier run in the end-to-end tests (tests/e2e/).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollbackd.config.model import ServiceConfig
from rollbackd.metrics import Metrics
from rollbackd.policy.conditions import DeployWindow
from rollbackd.policy.engine import ActionContext, ActionOutcome, IllegalTransition, PolicyState, ServicePolicy
from rollbackd.policy.rules import Rung, effective_rules
from rollbackd.state.history import History
from rollbackd.target.verify import CheckItem, Expectations, Verification
from tests.policy.observations import observe


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedRunner:
    """Records each rung it is asked to run and answers from a script (True = the action succeeded)."""

    def __init__(self, results: dict[str, bool] | None = None) -> None:
        self.results = results or {}
        self.ran: list[str] = []

    async def execute(self, rung: Rung, context: ActionContext) -> ActionOutcome:
        self.ran.append(rung.kind)
        return ActionOutcome(
            self.results.get(rung.kind, True),
            f"{rung.kind} done",
            Expectations(),
            blocked_revision="bad1" if rung.block_revision else None,
        )

    def plan(self, rung: Rung, context: ActionContext) -> list[str]:
        return [f"would {rung.kind}"]


class ScriptedVerifier:
    def __init__(self, *results: bool) -> None:
        self.results = list(results)
        self.calls = 0

    async def __call__(self, expect: Expectations) -> Verification:
        ok = self.results[min(self.calls, len(self.results) - 1)]
        self.calls += 1
        return Verification((CheckItem("service health", ok, "scripted"),), 0.0, 0.0)


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    history = History(tmp_path / "state.db")
    history.upgrade()
    yield history
    history.close()


def failing_health(start: float, seconds: int = 15) -> dict[str, list]:  # type: ignore[type-arg]
    return {"health": [observe("health", start + s, False, "connect_refused") for s in range(seconds)]}


def make_policy(
    service: ServiceConfig,
    history: History,
    runner: ScriptedRunner,
    verifier: ScriptedVerifier,
    clock: Clock,
    *,
    dry_run: bool = False,
) -> ServicePolicy:
    return ServicePolicy(
        service,
        effective_rules(service),
        history=history,
        metrics=Metrics(),
        runner=runner,
        verify=verifier,
        dry_run=dry_run,
        clock=clock,
    )


async def settle(policy: ServicePolicy) -> None:
    if policy.task is not None:
        await policy.task


def test_health_failure_without_deploy_restarts_and_recovers(service: ServiceConfig, history: History) -> None:
    clock, runner, verifier = Clock(1015), ScriptedRunner(), ScriptedVerifier(True)
    policy = make_policy(service, history, runner, verifier, clock)

    async def scenario() -> None:
        decision = await policy.evaluate(policy.view(failing_health(1000), deploy=None, blocked=frozenset()))
        assert decision is not None and decision.rule.name == "health-failing"
        await settle(policy)

    asyncio.run(scenario())
    assert runner.ran == ["restart"]
    assert policy.state == PolicyState.OK
    [incident] = history.incidents("vbrpg")
    assert incident.outcome == "recovered"
    assert incident.time_to_recover is not None
    assert [v.ok for v in incident.verifications] == [True]
    # Observations from before the recovery no longer count: the same history does not fire again.
    assert asyncio.run(policy.evaluate(policy.view(failing_health(1000), deploy=None, blocked=frozenset()))) is None


def test_failed_verification_climbs_the_ladder_then_holds(service: ServiceConfig, history: History) -> None:
    clock, runner, verifier = Clock(1015), ScriptedRunner(), ScriptedVerifier(False)
    policy = make_policy(service, history, runner, verifier, clock)
    deploy = DeployWindow(1, 990, 1900, "migration_arrived", "aaa", "vbrpg_backup_x.db")

    async def scenario() -> None:
        decision = await policy.evaluate(policy.view(failing_health(1000), deploy=deploy, blocked=frozenset()))
        assert decision is not None and decision.rule.name == "post-deploy-health"
        await settle(policy)

    asyncio.run(scenario())
    assert runner.ran == ["downgrade", "restore"]  # each rung once, then HOLD
    assert policy.state == PolicyState.HOLD
    [incident] = history.incidents("vbrpg")
    assert incident.outcome == "hold"
    assert "verification failed" in incident.notes


def test_failed_action_goes_to_the_next_rung_without_verifying(service: ServiceConfig, history: History) -> None:
    clock, runner, verifier = Clock(1015), ScriptedRunner({"downgrade": False}), ScriptedVerifier(True)
    policy = make_policy(service, history, runner, verifier, clock)
    deploy = DeployWindow(1, 990, 1900, "migration_arrived", "aaa", "vbrpg_backup_x.db")

    async def scenario() -> None:
        await policy.evaluate(policy.view(failing_health(1000), deploy=deploy, blocked=frozenset()))
        await settle(policy)

    asyncio.run(scenario())
    assert runner.ran == ["downgrade", "restore"]
    assert verifier.calls == 1
    assert policy.state == PolicyState.OK


def test_permanent_fault_takes_exactly_max_actions_then_holds(service: ServiceConfig, history: History) -> None:
    clock, runner, verifier = Clock(1015), ScriptedRunner(), ScriptedVerifier(True)
    policy = make_policy(service, history, runner, verifier, clock)

    async def scenario() -> None:
        for round_ in range(6):
            clock.now += 60
            observations = failing_health(clock.now - 15)
            await policy.evaluate(policy.view(observations, deploy=None, blocked=frozenset()))
            await settle(policy)
            # A verified recovery that does not hold: the service fails again a minute later.
            assert policy.state in (PolicyState.OK, PolicyState.HOLD), round_

    asyncio.run(scenario())
    assert runner.ran == ["restart"] * service.policy.max_actions
    assert policy.state == PolicyState.HOLD
    assert "flap limit" in policy.reason


def test_dry_run_decides_and_records_but_does_not_act(service: ServiceConfig, history: History) -> None:
    clock, runner, verifier = Clock(1015), ScriptedRunner(), ScriptedVerifier(True)
    policy = make_policy(service, history, runner, verifier, clock, dry_run=True)

    async def scenario() -> None:
        for _ in range(3):  # the same episode is recorded once
            await policy.evaluate(policy.view(failing_health(1000), deploy=None, blocked=frozenset()))

    asyncio.run(scenario())
    assert runner.ran == []
    assert verifier.calls == 0
    [incident] = history.incidents("vbrpg")
    assert incident.outcome == "dry_run"
    assert [(action.action, action.outcome) for action in incident.actions] == [("restart", "dry_run")]
    assert incident.actions[0].detail["would"] == ["would restart"]
    assert policy.state == PolicyState.DEGRADED


def test_hold_survives_a_restart_and_resume_lifts_it(service: ServiceConfig, history: History) -> None:
    clock = Clock(1015)
    policy = make_policy(service, history, ScriptedRunner(), ScriptedVerifier(False), clock)

    async def fail() -> None:
        await policy.evaluate(policy.view(failing_health(1000), deploy=None, blocked=frozenset()))
        await settle(policy)

    asyncio.run(fail())
    assert policy.state == PolicyState.HOLD
    runner = ScriptedRunner()
    restarted = make_policy(service, history, runner, ScriptedVerifier(True), clock)
    asyncio.run(restarted.load())
    assert restarted.state == PolicyState.HOLD
    assert (
        asyncio.run(restarted.evaluate(restarted.view(failing_health(1000), deploy=None, blocked=frozenset()))) is None
    )
    assert runner.ran == []
    assert history.request_resume("vbrpg")
    asyncio.run(restarted.evaluate(restarted.view({}, deploy=None, blocked=frozenset())))
    assert restarted.state == PolicyState.OK


def test_data_loss_restores_and_blocks_the_revision(service: ServiceConfig, history: History) -> None:
    clock, runner = Clock(1101), ScriptedRunner()
    policy = make_policy(service, history, runner, ScriptedVerifier(True), clock)
    deploy = DeployWindow(1, 1000, 1900, "revision_change", "aaa", "vbrpg_backup_x.db")
    rows = [
        observe(
            "rows",
            1100,
            True,
            revision="bad1",
            baseline_revision="aaa",
            baseline={"players": 400},
            counts={"players": 10},
            drop_ratio_since_revision_change={"players": 0.975},
        )
    ]

    async def scenario() -> None:
        decision = await policy.evaluate(policy.view({"rows": rows}, deploy=deploy, blocked=frozenset()))
        assert decision is not None and decision.rule.name == "data-loss"
        await settle(policy)

    asyncio.run(scenario())
    assert runner.ran == ["restore"]
    assert set(history.blocked_revisions("vbrpg")) == {"bad1"}
    [row] = history.history_rows("vbrpg")
    assert "players 400 → 10" in row.reason
    assert "revision bad1 blocked" in row.notes


def test_alert_only_rules_never_act_and_report_once(service: ServiceConfig, history: History) -> None:
    clock, runner = Clock(1200), ScriptedRunner()
    policy = make_policy(service, history, runner, ScriptedVerifier(True), clock)
    slow = {
        "latency": [observe("latency", 1100 + s, True, values={"/api/rooms/ABC123:latency": 7.0}) for s in range(100)]
    }

    async def scenario() -> None:
        for _ in range(3):
            assert await policy.evaluate(policy.view(slow, deploy=None, blocked=frozenset())) is None

    asyncio.run(scenario())
    assert runner.ran == []
    [incident] = history.incidents("vbrpg")
    assert (incident.rule, incident.outcome) == ("slow-no-deploy", "alerted")


def test_only_legal_transitions(service: ServiceConfig, history: History) -> None:
    policy = make_policy(service, history, ScriptedRunner(), ScriptedVerifier(True), Clock())
    with pytest.raises(IllegalTransition):
        asyncio.run(policy.transition(PolicyState.VERIFYING, "verifying what?"))
    asyncio.run(policy.transition(PolicyState.HOLD, "operator test"))
    assert history.load_state("vbrpg").state == "hold"  # type: ignore[union-attr]
    with pytest.raises(IllegalTransition):
        asyncio.run(policy.transition(PolicyState.RECOVERING, "no automatic action from HOLD"))


def test_an_unexpected_error_while_recovering_ends_in_hold(service: ServiceConfig, history: History) -> None:
    class BrokenVerifier:
        async def __call__(self, expect: Expectations) -> Verification:
            raise RuntimeError("the checklist itself broke")

    clock, runner = Clock(1015), ScriptedRunner()
    policy = ServicePolicy(service, effective_rules(service), history=history, metrics=Metrics(), runner=runner,
                           verify=BrokenVerifier(), clock=clock)  # fmt: skip

    async def scenario() -> None:
        await policy.evaluate(policy.view(failing_health(1000), deploy=None, blocked=frozenset()))
        await settle(policy)

    asyncio.run(scenario())
    assert policy.state == PolicyState.HOLD
    assert "internal error: the checklist itself broke" in policy.reason
