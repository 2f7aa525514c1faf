"""Whether the service runs and answers after a start or restart, looked at directly: an exit code alone misjudges.

A start or restart command can exit non-zero while the service comes up fine: an operator's own `systemctl start`
(or the service's own supervisor) raced it and the command found the service already running, or its pidfile
taken. Counting that as a failed action sends a healthy service to HOLD. So the executor looks at the service
afterwards, as the process and health probes do, and both the exit code and what it saw go into the history.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from rollbackd.config.model import ServiceConfig
from rollbackd.host.http_client import HttpClient
from rollbackd.probes.base import ProbeContext
from rollbackd.probes.http_request import timed_get
from rollbackd.probes.process import ProcessProbe, has_pid_source
from rollbackd.state.state_dir import StateDir

JUDGE_WAIT = 15.0  # seconds the service gets to answer its health check after a command that failed
RETRY_EVERY = 0.5  # between two health checks meanwhile (the Verifier's pace)


@dataclass(frozen=True)
class ServiceState:
    """What the service looked like after an action's command."""

    process_up: bool | None  # None: no pid source is configured (no pidfile, match or systemd unit)
    pid: int | None
    health_ok: bool
    health: str

    @property
    def up(self) -> bool:
        return self.health_ok and self.process_up is not False

    def summary(self) -> str:
        process = {None: "process not checked", True: f"process {self.pid} up", False: "process down"}[self.process_up]
        return f"{process}, health {self.health}"

    def as_dict(self) -> dict[str, Any]:
        return {"process_up": self.process_up, "pid": self.pid, "health_ok": self.health_ok, "health": self.health}


async def service_state(service: ServiceConfig, state_dir: StateDir, *, wait: float = JUDGE_WAIT) -> ServiceState:
    """Look at ``service`` now: its health answer (waiting up to ``wait`` seconds for a 2xx), then its process."""
    async with HttpClient() as client:
        health_ok, health = await _health(service, client, time.monotonic() + wait)
        if not has_pid_source(service):
            return ServiceState(None, None, health_ok, health)
        observation = await ProcessProbe(service, ProbeContext(http=client, state_dir=state_dir)).run()
    pid = observation.detail.get("pid")
    return ServiceState(observation.ok, pid if isinstance(pid, int) else None, health_ok, health)


async def _health(service: ServiceConfig, client: HttpClient, deadline: float) -> tuple[bool, str]:
    url = service.base_url + service.health_path
    ok_status = frozenset(service.probes.health.ok_status)
    while True:
        result = await timed_get(client, url, service.probes.health.timeout)
        if result.status is not None:
            if (result.status in ok_status) if ok_status else 200 <= result.status < 300:
                return True, f"GET {service.health_path} returned {result.status}"
            last = f"GET {service.health_path} returned {result.status}"
        else:
            last = f"GET {service.health_path} failed: {result.error}"
        if time.monotonic() >= deadline:
            return False, last
        await asyncio.sleep(min(RETRY_EVERY, max(0.0, deadline - time.monotonic())))
