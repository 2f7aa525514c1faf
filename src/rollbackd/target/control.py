"""Stopping, starting and restarting a service the way its operator does: systemd, docker compose or commands.

Each kind only builds argv lists; ``rollbackd.host.commands`` runs them with the kind's timeout and the service's
workdir as cwd (as the runbook's ``cd backend && ...``). Kind ``none`` can do nothing and says so, so callers
refuse actions that need a stopped service instead of pretending. The restore and the recovery engine share this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rollbackd.config.model import (
    CommandControl,
    Control,
    DockerComposeControl,
    NoControl,
    ServiceConfig,
    SystemdControl,
)
from rollbackd.host.commands import CommandResult, run_command, run_command_async
from rollbackd.target.code_version import compose_command

Action = Literal["start", "stop", "restart"]


class ControlError(Exception):
    """A control command failed (non-zero exit, timeout, not runnable); ``result`` says how."""

    def __init__(self, message: str, result: CommandResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class ControlUnavailable(ControlError):
    """The service's control kind is ``none``: rollbackd cannot stop or start it."""


@dataclass(frozen=True)
class ControlPlan:
    """One action as it will run: the argv lists in order, their cwd and timeout each."""

    action: Action
    argvs: tuple[tuple[str, ...], ...]
    cwd: Path
    timeout: float


class ServiceControl:
    """Start/stop/restart for one service. ``systemctl`` is injectable so tests can point it at a recorder."""

    def __init__(self, service: ServiceConfig, *, systemctl: str = "systemctl") -> None:
        self.service = service
        self.control: Control = service.control
        self.systemctl = systemctl

    @property
    def kind(self) -> str:
        return self.control.kind

    @property
    def can_act(self) -> bool:
        return not isinstance(self.control, NoControl)

    def plan(self, action: Action) -> ControlPlan:
        """Return the argv lists for ``action``. Raise ControlUnavailable for kind ``none``."""
        control = self.control
        cwd = self.service.workdir
        if isinstance(control, SystemdControl):
            prefix = [self.systemctl, *(["--user"] if control.user else [])]
            return ControlPlan(action, ((*prefix, action, control.unit),), cwd, control.timeout)
        if isinstance(control, DockerComposeControl):
            return ControlPlan(action, (_compose_argv(control, action),), control.project_dir or cwd, control.timeout)
        if isinstance(control, CommandControl):
            if action == "start":
                argvs: tuple[tuple[str, ...], ...] = (tuple(control.start),)
            elif action == "stop":
                argvs = (tuple(control.stop),)
            elif control.restart is not None:
                argvs = (tuple(control.restart),)
            else:
                argvs = (tuple(control.stop), tuple(control.start))
            return ControlPlan(action, argvs, cwd, control.timeout)
        raise ControlUnavailable(
            f"service {self.service.name!r} has control kind 'none': rollbackd cannot {action} it "
            "(configure [service.control] as systemd, docker-compose or command)"
        )

    def run(self, action: Action) -> list[CommandResult]:
        """Run ``action`` to completion (blocking). Raise ControlError when a command fails."""
        plan = self.plan(action)
        results = []
        for argv in plan.argvs:
            result = run_command(argv, cwd=plan.cwd, timeout=plan.timeout)
            results.append(result)
            _require_ok(self.service.name, action, result)
        return results

    async def run_async(self, action: Action) -> list[CommandResult]:
        """Like ``run`` without blocking the event loop."""
        plan = self.plan(action)
        results = []
        for argv in plan.argvs:
            result = await run_command_async(argv, cwd=plan.cwd, timeout=plan.timeout)
            results.append(result)
            _require_ok(self.service.name, action, result)
        return results

    def stop(self) -> list[CommandResult]:
        return self.run("stop")

    def start(self) -> list[CommandResult]:
        return self.run("start")

    def restart(self) -> list[CommandResult]:
        return self.run("restart")


def _compose_argv(control: DockerComposeControl, action: Action) -> tuple[str, ...]:
    argv = compose_command(control)
    verbs: dict[Action, Sequence[str]] = {"start": ["up", "-d"], "stop": ["stop"], "restart": ["restart"]}
    return (*argv, *verbs[action], control.service)


def _require_ok(service: str, action: Action, result: CommandResult) -> None:
    if not result.ok:
        tail = result.output_tail.strip().splitlines()[-1:] or [""]
        detail = f": {tail[0]}" if tail[0] else ""
        raise ControlError(f"cannot {action} service {service!r}: {result.summary()}{detail}", result)
