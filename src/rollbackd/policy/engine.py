"""One service's recovery state machine: OK → DEGRADED → RECOVERING → VERIFYING → OK, or HOLD.

Fed a ``ServiceView`` after each observation, it picks the highest-priority active rule, asks the guard whether
it may act, then climbs the rule's ladder one rung at a time: act, verify, and either close the incident as
recovered or go to the next rung; at the top of the ladder (or past the flap limit) it holds and alerts. Every
transition goes through ``transition()``: a log line, a metric and, for HOLD, a persisted reason. The engine
knows nothing of how an action is carried out (``ActionRunner``) or how the service is checked (``Verify``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from rollbackd.config.model import ServiceConfig
from rollbackd.metrics import POLICY_STATES, Metrics
from rollbackd.observation import Observation, ProbeWindow
from rollbackd.policy.conditions import TIMED_EVIDENCE, DeployWindow, Reading, ServiceView, evaluate
from rollbackd.policy.rules import Rule, Rung
from rollbackd.state.history import History
from rollbackd.target.verify import Expectations, Verification

log = logging.getLogger(__name__)
T = TypeVar("T")


class PolicyState(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    RECOVERING = "recovering"
    VERIFYING = "verifying"
    HOLD = "hold"


TRANSITIONS: dict[PolicyState, frozenset[PolicyState]] = {
    PolicyState.OK: frozenset({PolicyState.DEGRADED, PolicyState.RECOVERING, PolicyState.HOLD}),
    PolicyState.DEGRADED: frozenset({PolicyState.OK, PolicyState.RECOVERING, PolicyState.HOLD}),
    PolicyState.RECOVERING: frozenset(
        {PolicyState.VERIFYING, PolicyState.RECOVERING, PolicyState.HOLD, PolicyState.OK}
    ),
    PolicyState.VERIFYING: frozenset({PolicyState.OK, PolicyState.RECOVERING, PolicyState.HOLD}),
    PolicyState.HOLD: frozenset({PolicyState.OK}),
}


class IllegalTransition(RuntimeError):
    pass


@dataclass(frozen=True)
class Decision:
    """What the policy chose and why: the rule, the evidence, and the ladder it will climb."""

    service: str
    rule: Rule
    reading: Reading
    deploy: DeployWindow | None

    @property
    def ladder(self) -> tuple[Rung, ...]:
        return self.rule.ladder

    def explanation(self) -> str:
        """One sentence for the history and the alert: what was seen, and what the runbook says to do."""
        plan = ", then ".join(rung.describe() for rung in self.ladder) or "nothing"
        return f"{self.reading.explanation[:1].upper()}{self.reading.explanation[1:]}; rule {self.rule.name}: {plan}."


@dataclass(frozen=True)
class ActionContext:
    service: str
    incident_id: int | None
    decision: Decision
    automatic: bool = True
    code_rollback: bool | None = None  # check out the pre-deploy commit too; None: as policy.code_rollback says
    action_id: int | None = None  # the history's record of the action being carried out (the restore journal names it)


@dataclass(frozen=True)
class ActionOutcome:
    """How an action ended, and what its verification must prove."""

    ok: bool
    summary: str
    expectations: Expectations = field(default_factory=Expectations)
    verify: bool = True  # a stop is not verified: nothing should answer afterwards
    backup_used: str | None = None
    revision_after: str | None = None
    blocked_revision: str | None = None
    commands: tuple[Mapping[str, Any], ...] = ()  # each external command run: argv, exit code, output tail, duration
    detail: Mapping[str, Any] = field(default_factory=dict)
    superseded: bool = False  # not carried out: another process changed the database after the evidence began


class ActionRunner(Protocol):
    async def execute(self, rung: Rung, context: ActionContext) -> ActionOutcome: ...

    def plan(self, rung: Rung, context: ActionContext) -> list[str]: ...


Verify = Callable[[Expectations], Awaitable[Verification]]
Alert = Callable[[str, dict[str, Any]], None]


class OverloadGate(Protocol):
    """Whether the daemon itself is overloaded (runtime/self_load.py's SelfLoad is the one the daemon passes)."""

    def holding(self) -> str:
        """Why decisions on timing evidence are held now ('' when they are not)."""
        ...

    async def calm(self) -> None:
        """Return once the daemon is no longer overloaded."""
        ...

    def fresh_since(self) -> float:
        """When (wall clock) the last overload ended: timing evidence from before then is stale."""
        ...


class ServicePolicy:
    def __init__(
        self,
        service: ServiceConfig,
        rules: tuple[Rule, ...],
        *,
        history: History,
        metrics: Metrics,
        runner: ActionRunner,
        verify: Verify,
        alert: Alert | None = None,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        overload: OverloadGate | None = None,
    ) -> None:
        self.service = service
        self.rules = rules
        self.history = history
        self.metrics = metrics
        self.runner = runner
        self.verify = verify
        self.alert = alert or (lambda event, payload: None)
        self.dry_run = dry_run
        self.clock = clock
        self.state = PolicyState.OK
        self.reason = ""
        self.ignore_before = 0.0  # observations older than the last recovery do not count
        self.flap_reset_at = 0.0  # automatic actions before this do not count towards the flap limit
        self.recovered_at: float | None = None
        self.announced: set[str] = set()  # alert-only / dry-run rules already reported for the current episode
        self.task: asyncio.Task[None] | None = None
        self.incident_id: int | None = None  # the incident the running recovery works on
        self.closing = False  # the daemon is shutting down: no new recovery may start
        self.last_decision: Decision | None = None
        self.overload = overload
        self.held_while_overloaded: dict[str, str] = {}  # rule → what it would do, said once per incident-to-be
        self._export_state()

    async def load(self) -> None:
        """Pick up a HOLD persisted by an earlier run: a restarted daemon must not resume acting by itself."""
        saved = await self._db(self.history.load_state, self.service.name)
        if saved is not None and saved.state == PolicyState.HOLD:
            self.state, self.reason = PolicyState.HOLD, saved.reason
            self._export_state()
            log.warning("%s: still in HOLD from an earlier run: %s", self.service.name, saved.reason)

    async def _db(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a state-DB call in a thread: the event loop never waits on SQLite."""
        return await asyncio.to_thread(function, *args, **kwargs)

    # The state machine

    async def transition(self, new: PolicyState, reason: str) -> None:
        """The one place states change: legal moves only, each logged, exported and (HOLD) persisted."""
        if new == self.state and new != PolicyState.RECOVERING:
            self.reason = reason
            return
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"{self.service.name}: {self.state} → {new} is not a legal transition")
        log.log(
            logging.WARNING if new in (PolicyState.HOLD, PolicyState.RECOVERING) else logging.INFO,
            "%s: %s → %s: %s",
            self.service.name,
            self.state.value,
            new.value,
            reason,
            extra={"service": self.service.name},
        )
        self.state, self.reason = new, reason
        self._export_state()
        await self._db(self.history.save_state, self.service.name, new.value, reason)

    def _export_state(self) -> None:
        self.metrics.set_state(self.metrics.policy_state, self.service.name, POLICY_STATES, self.state.value)

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    # Deciding

    def active(self, view: ServiceView) -> list[Decision]:
        """Every rule whose signal is active now, highest priority first."""
        decisions = []
        for rule in self.rules:
            reading = evaluate(rule, view)
            if reading is not None:
                decisions.append(Decision(self.service.name, rule, reading, view.deploy))
        return decisions

    def view(
        self,
        observations: Mapping[str, Sequence[Observation] | ProbeWindow],
        *,
        deploy: DeployWindow | None,
        blocked: frozenset[str],
        arrived: frozenset[str] = frozenset(),
        service_pid: int | None = None,
    ) -> ServiceView:
        """Build the view the rules read: only observations since the last recovery count, and of the probes that
        judge time (TIMED_EVIDENCE), only those since the daemon's last overload ended: a decision held while
        it was overloaded is taken afresh, on what it saw once calm. ``observations`` are each probe's runs,
        oldest first, or the log's windows of them (``ObservationLog.window``: narrowed here by bisection, as
        this runs after every observation)."""
        fresh = self.overload.fresh_since() if self.overload is not None else 0.0
        ignore_before = self.ignore_before
        timed_since = max(ignore_before, fresh)
        recent: dict[str, Sequence[Observation]] = {}
        inconclusive: dict[str, list[float]] = {}
        for probe, entries in observations.items():
            since = timed_since if probe in TIMED_EVIDENCE else ignore_before
            window = entries if isinstance(entries, ProbeWindow) else ProbeWindow.of(entries)
            window = window.since(since, ignore_before)
            recent[probe] = window.conclusive
            if window.inconclusive:
                inconclusive[probe] = [entry.started_at for entry in window.inconclusive]
        return ServiceView(
            service=self.service.name,
            now=self.clock(),
            observations=recent,
            deploy=deploy,
            blocked=blocked,
            arrived=arrived,
            service_pid=service_pid,
            inconclusive=inconclusive,
        )

    async def evaluate(self, view: ServiceView) -> Decision | None:
        """Look at the service once; maybe start a recovery (in a task). Return the decision taken, if any."""
        if self.busy or self.closing:
            return None
        if self.state == PolicyState.HOLD:
            await self._check_resume()
            return None
        self._maybe_reset_flap_counter(view.now)
        active = self.active(view)
        self.announced &= {decision.rule.name for decision in active}
        for alert_only in (decision for decision in active if not decision.rule.acts):
            if any(rung.kind == "hold" for rung in alert_only.ladder):
                await self._hold_without_acting(alert_only, alert_only.rule.description)
                return alert_only
            await self._announce_once(alert_only, outcome="alerted")
        decision = next((decision for decision in active if decision.rule.acts), None)
        if decision is None or not self._overloaded():
            self.held_while_overloaded.clear()
        if decision is None:
            failing = [probe for probe, entries in view.observations.items() if entries and not entries[-1].ok]
            if failing or active:
                await self.transition(
                    PolicyState.DEGRADED, f"failing: {', '.join(sorted(failing)) or active[0].rule.name}"
                )
            elif self.state == PolicyState.DEGRADED:
                await self.transition(PolicyState.OK, "all probes ok")
            return None
        if await self._held_while_overloaded(decision):
            return None
        self.last_decision = decision
        if self.dry_run:
            await self._announce_once(decision, outcome="dry_run")
            return decision
        limit = self.service.policy.max_actions
        taken = await self._db(
            self.history.automatic_actions_since,
            self.service.name,
            max(view.now - self.service.policy.action_window, self.flap_reset_at),
        )
        if taken >= limit:
            await self._hold_without_acting(
                decision, f"flap limit: {taken} automatic actions in the last window (max {limit})"
            )
            return decision
        self.task = asyncio.create_task(self._recover(decision), name=f"recover-{self.service.name}")
        return decision

    # Acting

    async def _recover(self, decision: Decision) -> None:
        """Climb the ladder; an unexpected error anywhere (a bug, the state DB gone) ends in HOLD, never in a
        state the engine cannot leave."""
        try:
            await self._climb(decision)
        except asyncio.CancelledError:
            # Shutdown did not wait long enough (daemon.shutdown_timeout): say so in the history, not "open".
            if self.incident_id is not None:
                with contextlib.suppress(Exception):
                    self.history.close_incident(
                        self.incident_id, "interrupted", notes="rollbackd stopped before the recovery ended"
                    )
            raise
        except Exception as error:
            log.exception("%s: recovery from %s failed unexpectedly", self.service.name, decision.rule.name)
            with contextlib.suppress(Exception):
                await self.transition(PolicyState.HOLD, f"{decision.rule.name}: internal error: {error}")

    async def _climb(self, decision: Decision) -> None:
        service = self.service.name
        started = self.clock()
        incident_id = await self._db(
            self.history.open_incident,
            service,
            decision.rule.name,
            decision.reading.signal,
            decision.explanation(),
            decision.reading.evidence,
            in_deploy_window=decision.deploy is not None,
            revision_before=_revision_from(decision),
        )
        self.incident_id = incident_id
        self.metrics.incidents.labels(service=service, rule=decision.rule.name).inc()
        self.alert(
            "incident_opened",
            {"incident": incident_id, "rule": decision.rule.name, "explanation": decision.explanation()},
        )
        context = ActionContext(service, incident_id, decision)
        failure = "the ladder has no action"
        for position, rung in enumerate(decision.ladder):
            if rung.kind == "hold":
                break
            if position:
                await self._wait_until_calm(f"{decision.rule.name}: before {rung.describe()}")
            taken = await self._db(
                self.history.automatic_actions_since,
                service,
                max(self.clock() - self.service.policy.action_window, self.flap_reset_at),
            )
            if taken >= self.service.policy.max_actions:
                failure = f"flap limit reached ({taken} automatic actions) before {rung.describe()}"
                break
            await self.transition(PolicyState.RECOVERING, f"{decision.rule.name}: {rung.describe()}")
            outcome = await self._act(rung, context)
            if outcome.superseded:
                await self._superseded(incident_id, decision, outcome.summary)
                return
            if not outcome.ok:
                failure = f"{rung.describe()} failed: {outcome.summary}"
                continue
            if not outcome.verify:
                failure = f"{rung.describe()} done; a person must look"
                continue
            await self.transition(PolicyState.VERIFYING, f"{decision.rule.name}: verifying after {rung.describe()}")
            verification = await self.verify(outcome.expectations)
            await self._db(
                self.history.record_verification, service, incident_id, None, verification.ok, verification.as_dicts()
            )
            if not verification.ok and self._overloaded():
                # The checks ran on a starved daemon: their failure may be its own. Judge again once calm.
                await self._wait_until_calm(f"{decision.rule.name}: verification after {rung.describe()} failed")
                verification = await self.verify(outcome.expectations)
                await self._db(
                    self.history.record_verification,
                    service,
                    incident_id,
                    None,
                    verification.ok,
                    verification.as_dicts(),
                )
            if not verification.ok:
                failure = f"after {rung.describe()}: {verification.summary()}"
                log.warning("%s: %s", service, failure, extra={"service": service, "incident": incident_id})
                continue
            await self._recovered(decision, incident_id, outcome, started)
            return
        await self._hold(incident_id, decision, failure)

    async def _act(self, rung: Rung, context: ActionContext) -> ActionOutcome:
        """Run one rung, recorded in the history before it starts (the flap guard counts it even if we crash)."""
        action_id = await self._db(
            self.history.start_action,
            self.service.name,
            rung.kind,
            context.incident_id,
            automatic=context.automatic,
            detail={"rung": rung.describe(), "target": rung.target},
        )
        try:
            outcome = await self.runner.execute(rung, replace(context, action_id=action_id))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # shutdown did not wait for it: not "running" for ever
                self.history.interrupt_action(
                    action_id, {"interrupted": {"at": self.clock(), "end_state": "rollbackd stopped before it ended"}}
                )
            raise
        except Exception as error:  # noqa: BLE001 - an action's bug must end in HOLD, never kill the daemon
            log.exception("%s: %s raised", self.service.name, rung.kind, extra={"service": self.service.name})
            outcome = ActionOutcome(False, f"{type(error).__name__}: {error}")
        label = "success" if outcome.ok else "superseded" if outcome.superseded else "failed"
        await self._db(
            self.history.finish_action,
            action_id,
            label,
            commands=outcome.commands,
            detail={"summary": outcome.summary, **outcome.detail},
        )
        self.metrics.recovery_actions.labels(service=self.service.name, action=rung.kind, outcome=label).inc()
        log.log(
            logging.INFO if outcome.ok else logging.ERROR,
            "%s: %s %s: %s",
            self.service.name,
            rung.describe(),
            label,
            outcome.summary,
            extra={"service": self.service.name, "action": rung.kind, "incident": context.incident_id},
        )
        return outcome

    async def _recovered(self, decision: Decision, incident_id: int, outcome: ActionOutcome, started: float) -> None:
        now = self.clock()
        notes = []
        if outcome.blocked_revision:
            await self._db(
                self.history.block_revision,
                self.service.name,
                outcome.blocked_revision,
                decision.explanation(),
                incident_id,
            )
            notes.append(f"revision {outcome.blocked_revision} blocked")
        await self._db(
            self.history.close_incident,
            incident_id,
            "recovered",
            revision_after=outcome.revision_after,
            backup_used=outcome.backup_used,
            notes="; ".join(notes),
        )
        self.metrics.recovery_duration_seconds.labels(service=self.service.name).observe(now - started)
        self.ignore_before = now
        self.recovered_at = now
        self.alert("recovered", {"incident": incident_id, "rule": decision.rule.name, "seconds": now - started})
        if decision.rule.hold_after:
            await self.transition(
                PolicyState.HOLD, f"recovered from {decision.rule.name}; holding for a person to look"
            )
        else:
            await self.transition(PolicyState.OK, f"recovered from {decision.rule.name} (incident {incident_id})")

    async def _superseded(self, incident_id: int, decision: Decision, reason: str) -> None:
        """The decision was overtaken by another process's change to the database: no action, no HOLD; what was
        seen before now no longer counts, and the policy judges the service afresh."""
        await self._db(self.history.close_incident, incident_id, "superseded", notes=reason)
        self.ignore_before = max(self.ignore_before, self.clock())
        self.alert("superseded", {"incident": incident_id, "rule": decision.rule.name, "reason": reason})
        await self.transition(PolicyState.OK, f"{decision.rule.name}: {reason}")

    async def _hold(self, incident_id: int, decision: Decision, reason: str) -> None:
        await self._db(self.history.close_incident, incident_id, "hold", notes=reason)
        await self.transition(PolicyState.HOLD, f"{decision.rule.name}: {reason}")
        self.alert("hold", {"incident": incident_id, "rule": decision.rule.name, "reason": reason})

    async def _hold_without_acting(self, decision: Decision, reason: str) -> None:
        incident_id = await self._db(
            self.history.open_incident,
            self.service.name,
            decision.rule.name,
            decision.reading.signal,
            decision.explanation(),
            decision.reading.evidence,
            in_deploy_window=decision.deploy is not None,
            revision_before=_revision_from(decision),
        )
        await self._hold(incident_id, decision, reason)

    async def _announce_once(self, decision: Decision, outcome: str) -> None:
        """Alert-only rules and dry-run decisions: one incident per episode, not one per observation."""
        if decision.rule.name in self.announced:
            return
        self.announced.add(decision.rule.name)
        incident_id = await self._db(
            self.history.open_incident,
            self.service.name,
            decision.rule.name,
            decision.reading.signal,
            decision.explanation(),
            decision.reading.evidence,
            dry_run=outcome == "dry_run",
            in_deploy_window=decision.deploy is not None,
            revision_before=_revision_from(decision),
        )
        if outcome == "dry_run":
            context = ActionContext(self.service.name, incident_id, decision)
            for rung in decision.ladder:
                if rung.kind in ("hold", "alert"):
                    continue
                steps = self.runner.plan(rung, context)
                action_id = await self._db(
                    self.history.start_action,
                    self.service.name,
                    rung.kind,
                    incident_id,
                    detail={"would": steps, "rung": rung.describe()},
                )
                await self._db(self.history.finish_action, action_id, "dry_run", detail={})
                self.metrics.recovery_actions.labels(
                    service=self.service.name, action=rung.kind, outcome="dry_run"
                ).inc()
                log.warning("%s: dry run: would %s: %s", self.service.name, rung.describe(), "; ".join(steps))
        await self._db(
            self.history.close_incident,
            incident_id,
            outcome,
            notes="dry run: nothing was changed" if outcome == "dry_run" else "",
        )
        await self.transition(PolicyState.DEGRADED, f"{decision.rule.name}: {outcome.replace('_', ' ')}")
        self.alert(
            outcome, {"incident": incident_id, "rule": decision.rule.name, "explanation": decision.explanation()}
        )

    # The daemon's own overload

    def _overloaded(self) -> str:
        return self.overload.holding() if self.overload is not None else ""

    async def _held_while_overloaded(self, decision: Decision) -> bool:
        """True when ``decision`` must wait because the daemon itself is overloaded (its rule judges timing
        evidence); said once per rule and episode in the log, and kept for `status`."""
        holding = self._overloaded()
        if not holding or decision.rule.acts_while_overloaded:
            return False
        if decision.rule.name not in self.held_while_overloaded:
            plan = ", then ".join(rung.describe() for rung in decision.ladder if rung.kind != "hold")
            self.held_while_overloaded[decision.rule.name] = plan
            log.warning(
                "%s: %s; rule %s would %s (%s)",
                self.service.name,
                holding,
                decision.rule.name,
                plan,
                decision.reading.explanation,
                extra={"service": self.service.name},
            )
        await self.transition(PolicyState.DEGRADED, f"overloaded: holding decisions ({decision.rule.name})")
        return True

    async def _wait_until_calm(self, what: str) -> None:
        """Climb no further while the daemon is overloaded: the next rung waits for a calm daemon."""
        holding = self._overloaded()
        if not holding or self.overload is None:
            return
        log.warning("%s: %s: %s", self.service.name, what, holding, extra={"service": self.service.name})
        await self.overload.calm()
        log.info("%s: %s: the daemon is calm again, going on", self.service.name, what)

    # HOLD and the flap counter

    async def _check_resume(self) -> None:
        saved = await self._db(self.history.load_state, self.service.name)
        if saved is not None and saved.resume_requested_at is not None:
            now = self.clock()
            self.flap_reset_at = now
            self.ignore_before = now
            self.announced.clear()
            await self.transition(PolicyState.OK, "resumed by an operator")
            self.alert("resumed", {"reason": "resumed by an operator"})

    def _maybe_reset_flap_counter(self, now: float) -> None:
        """Counters reset only once a verified recovery has held for ``stable_after``."""
        if (
            self.recovered_at is not None
            and self.state == PolicyState.OK
            and now - self.recovered_at >= self.service.policy.stable_after
        ):
            self.flap_reset_at = now
            self.recovered_at = None

    def describe(self) -> dict[str, Any]:
        """State for `rollbackd status`."""
        return {
            "state": self.state.value,
            "reason": self.reason,
            "busy": self.busy,
            "last_decision": self.last_decision.explanation() if self.last_decision else None,
            "held_while_overloaded": dict(self.held_while_overloaded),
        }


def _revision_from(decision: Decision) -> str | None:
    evidence = decision.reading.evidence
    for key in ("revision", "db_revision"):
        if isinstance(evidence.get(key), str):
            return str(evidence[key])
    return decision.deploy.from_revision if decision.deploy else None
