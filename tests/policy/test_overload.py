"""The policy on an overloaded daemon: inconclusive runs are no evidence, timing rules wait for a calm daemon
(said once), a corruption a completed check proved is acted on at once, and no ladder is climbed meanwhile.

A real state DB and registry, the real SelfLoad driven by an injected clock; the action runner and verifier are
the scripted boundary of tests/policy/test_engine.py."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

from rollbackd.config.model import ServiceConfig
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.policy.engine import PolicyState, ServicePolicy
from rollbackd.policy.rules import effective_rules
from rollbackd.runtime.self_load import SelfLoad
from rollbackd.state.history import History
from tests.policy.observations import observe
from tests.policy.test_engine import Clock, ScriptedRunner, ScriptedVerifier, history  # noqa: F401 - fixture

__all__ = ["history"]


def overloaded_daemon(clock: Clock) -> SelfLoad:
    load = SelfLoad(Metrics(CollectorRegistry()), clock=clock, wall=clock, cpu=lambda: 0.0, calm_after=5.0)
    calm_down(load, clock, lag=0.8, seconds=1.0)
    assert load.overloaded
    return load


def calm_down(load: SelfLoad, clock: Clock, *, lag: float = 0.0, seconds: float = 8.0) -> None:
    end = clock.now + seconds
    while clock.now < end:
        clock.now += 0.5
        load.note_lag(clock.now, lag)
        load.update(clock.now)


def make_policy(
    service: ServiceConfig, history: History, runner: ScriptedRunner, verifier: ScriptedVerifier, clock: Clock,
    load: SelfLoad | None,
) -> ServicePolicy:  # fmt: skip
    return ServicePolicy(
        service,
        effective_rules(service),
        history=history,
        metrics=Metrics(CollectorRegistry()),
        runner=runner,
        verify=verifier,
        clock=clock,
        overload=load,
    )


def health(start: float, count: int, *, inconclusive: bool = False) -> list[Observation]:
    doubt = "the daemon itself lagged 0.80s while the run went on" if inconclusive else ""
    return [
        Observation("vbrpg", "health", False, "timeout", started_at=start + s, duration=2.0, inconclusive=doubt)
        for s in range(count)
    ]


def corrupt(start: float, count: int = 3) -> list[Observation]:
    return [observe("integrity", start + s, False, "corrupt", check="quick", errors=["page 3"]) for s in range(count)]


def test_failures_the_daemon_caused_are_no_evidence(service: ServiceConfig, history: History) -> None:
    clock, runner = Clock(1015), ScriptedRunner()
    policy = make_policy(service, history, runner, ScriptedVerifier(True), clock, None)
    view = policy.view({"health": health(1000, 15, inconclusive=True)}, deploy=None, blocked=frozenset())
    assert asyncio.run(policy.evaluate(view)) is None
    assert policy.state == PolicyState.OK and runner.ran == [] and history.incidents("vbrpg") == []


def test_a_window_with_too_few_conclusive_failures_cannot_fire(service: ServiceConfig, history: History) -> None:
    clock, runner = Clock(1015), ScriptedRunner()
    policy = make_policy(service, history, runner, ScriptedVerifier(True), clock, None)
    # Two real failures 14 s apart with twelve runs the daemon's own lag spoiled in between: no trend.
    observations = [*health(1000, 1), *health(1001, 12, inconclusive=True), *health(1014, 1)]
    assert asyncio.run(policy.evaluate(policy.view({"health": observations}, deploy=None, blocked=frozenset()))) is None
    assert runner.ran == []
    # Conclusive failures throughout: it fires.
    assert asyncio.run(policy.evaluate(policy.view({"health": health(1000, 15)}, deploy=None, blocked=frozenset())))


def test_timing_rules_wait_while_overloaded_said_once_then_act_once_calm(
    service: ServiceConfig, history: History, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rollbackd")
    clock, runner = Clock(1015), ScriptedRunner()
    load = overloaded_daemon(clock)
    policy = make_policy(service, history, runner, ScriptedVerifier(True), clock, load)

    async def scenario() -> None:
        for _ in range(3):
            view = policy.view({"health": health(1000, 15)}, deploy=None, blocked=frozenset())
            assert await policy.evaluate(view) is None
        assert policy.state == PolicyState.DEGRADED
        assert policy.reason == "overloaded: holding decisions (health-failing)"
        assert policy.describe()["held_while_overloaded"] == {"health-failing": "restart"}
        assert runner.ran == [] and history.incidents("vbrpg") == []
        calm_down(load, clock)
        # Calm again: what health saw while the daemon was overloaded is stale; it decides on fresh evidence.
        stale = policy.view({"health": health(1000, int(clock.now) - 1000)}, deploy=None, blocked=frozenset())
        assert await policy.evaluate(stale) is None and runner.ran == []
        clock.now += 15
        view = policy.view({"health": health(1000, int(clock.now) - 1000)}, deploy=None, blocked=frozenset())
        decision = await policy.evaluate(view)
        assert decision is not None and decision.rule.name == "health-failing"
        assert policy.task is not None
        await policy.task

    asyncio.run(scenario())
    assert runner.ran == ["restart"]
    assert caplog.text.count("rule health-failing would restart") == 1


def test_a_corruption_a_completed_check_proved_is_acted_on_at_once(service: ServiceConfig, history: History) -> None:
    clock, runner = Clock(1015), ScriptedRunner()
    load = overloaded_daemon(clock)
    policy = make_policy(service, history, runner, ScriptedVerifier(True), clock, load)
    rules = {rule.name: rule.acts_while_overloaded for rule in policy.rules}
    assert rules["integrity-failed"] and rules["data-loss"] and rules["schema-ahead"]
    assert not rules["health-failing"] and not rules["process-down"] and not rules["migration-failed"]

    async def scenario() -> None:
        decision = await policy.evaluate(policy.view({"integrity": corrupt(1010)}, deploy=None, blocked=frozenset()))
        assert decision is not None and decision.rule.name == "integrity-failed"
        assert policy.task is not None
        await policy.task

    asyncio.run(scenario())
    assert runner.ran == ["restore"] and load.overloaded
    [incident] = history.incidents("vbrpg")
    assert incident.outcome == "recovered"


def test_no_ladder_is_climbed_while_overloaded(service: ServiceConfig, history: History) -> None:
    """A verification that failed on a starved daemon is judged again once calm, before any next rung."""
    clock, runner = Clock(1015), ScriptedRunner()
    load = overloaded_daemon(clock)
    verifier = ScriptedVerifier(False, True)
    policy = make_policy(service, history, runner, verifier, clock, load)

    async def scenario() -> None:
        await policy.evaluate(policy.view({"integrity": corrupt(1010)}, deploy=None, blocked=frozenset()))
        assert policy.task is not None
        _, pending = await asyncio.wait({policy.task}, timeout=1.0)
        assert pending and verifier.calls == 1 and runner.ran == ["restore"]  # parked until calm, not climbing
        calm_down(load, clock)
        await policy.task

    asyncio.run(scenario())
    assert runner.ran == ["restore"] and verifier.calls == 2
    assert policy.state == PolicyState.OK
