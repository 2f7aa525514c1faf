"""A whole stack for the runbook's scenarios: the example service (controlled by rollbackd's `command` kind),
seeded, and a real `rollbackd run` process watching it with short intervals. Faults are injected with the
example's own `fault` command; outcomes are read through rollbackd's CLI, its state DB and the service's HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rollbackd.state.history import Incident
from tests.support.detached_service import DetachedService
from tests.support.rollbackd_config import FAST_RULES, SMOKE, daemon_toml, probes_toml
from tests.support.rollbackd_daemon import DaemonProcess, start_rollbackd, wait_for
from tests.support.vbrpg_install import VbrpgInstall
from tests.support.vbrpg_service import CLEAN_HEAD, free_port

ROOM = "E2E001"
RELATIVE_PIDFILE = Path("run/vbrpg.pid")


@dataclass
class Stack(VbrpgInstall):
    rooms: int = 200
    players: int = 400
    participants_per_room: int = 3
    dry_run: bool = False
    latency_bound: str = "1s"
    probe_every: str | None = "500ms"  # None: the probes' default intervals
    fast_rules: bool = True
    code_rollback: bool = False
    extra_config: str = ""
    metrics_port: int = field(default_factory=free_port)
    daemon: DaemonProcess | None = None

    @property
    def daemon_log(self) -> Path:
        return self.root / "rollbackd.log"

    # Setting up

    def set_up(self) -> None:
        self.install(
            rooms=self.rooms,
            players=self.players,
            participants_per_room=self.participants_per_room,
            agents_per_room=1,
        )
        self.start_service()
        with self.client() as client:
            response = client.post("/api/rooms", json={"name": "E2E", "host_name": "e2e-host", "code": ROOM})
            assert response.status_code == 201, response.text
        self.write_config()

    @property
    def detached(self) -> DetachedService:
        """Paths relative to the workdir, as a hand-written config has them."""
        return DetachedService(Path("data/vbrpg.db"), Path("."), self.port, RELATIVE_PIDFILE,
                               Path("run/vbrpg.log"), cwd=self.workdir)  # fmt: skip

    def process_match(self) -> str:
        """The process probe's way to find the service's pid."""
        return f'pidfile = "{RELATIVE_PIDFILE}"'

    def write_config(self) -> None:
        alembic = json.dumps([str(Path(sys.executable).parent / "alembic")])
        probes = probes_toml(
            every=self.probe_every,
            process=self.process_match(),
            integrity_every="1s" if self.probe_every else None,
            full_every="1h" if self.probe_every else None,
            latency_path=f"/api/rooms/{ROOM}",
            latency_window="10s",
        )
        self.config_path.write_text(
            daemon_toml(self.state_dir, self.metrics_port, dry_run=self.dry_run)
            + f"""
[[service]]
name = "vbrpg"
workdir = "{self.workdir}"
database = "data/vbrpg.db"
base_url = "{self.base_url}"

[service.alembic]
command = {alembic}
timeout = "2m"

{self.control_config()}

[service.backups]
every = "1h"
drill_every = "0s"
{probes}
[service.deploy]
window = "5m"

[service.policy]
max_actions = 3
action_window = "1h"
stable_after = "10m"
verify_timeout = "30s"
code_rollback = {str(self.code_rollback).lower()}

[service.verify]
latency_bound = "{self.latency_bound}"
{SMOKE}
{FAST_RULES if self.fast_rules else ""}
{self.extra_config}
"""
        )

    def start_daemon(self, *, backup: bool = True) -> None:
        """Start `rollbackd run`; wait until it is ready and (``backup``) has its start-up backup."""
        self.daemon = start_rollbackd(self.config_path, self.state_dir, self.metrics_port)
        self.daemon.wait_ready(backups_of=("vbrpg",) if backup else ())

    def tear_down(self) -> None:
        if self.daemon is not None:
            self.daemon.terminate_group(timeout=30)
        self.stop_service()

    # Acting on the stack

    def fault(self, name: str, *arguments: object) -> subprocess.CompletedProcess[str]:
        """Inject a fault the way the example does; a failing migration fault's non-zero exit is the point."""
        if name == "kill":
            return self.vbrpg("fault", name, "--pidfile", self.workdir / RELATIVE_PIDFILE, *arguments, check=False)
        if name in ("corrupt", "lock"):
            return self.vbrpg("fault", name, "--db", self.database, *arguments, check=False)
        return self.vbrpg("fault", name, "--db", self.database, "--app-dir", self.workdir, *arguments, check=False)

    # Reading the outcome

    def status(self) -> dict[str, Any] | None:
        """`rollbackd status --json`, as an operator reads it."""
        result = self.rollbackd("status", "--json")
        if result.returncode not in (0, 1) or not result.stdout.strip():
            return None
        data = json.loads(result.stdout)
        return data if data.get("daemon") else None

    def state(self) -> str | None:
        status = self.status()
        return None if status is None else str(status["services"]["vbrpg"]["policy"]["state"])

    def incidents(self) -> list[Incident]:
        history = self.history()
        try:
            return list(reversed(history.incidents("vbrpg")))
        finally:
            history.close()

    def actions(self) -> list[tuple[str, str]]:
        return [(action.action, action.outcome) for incident in self.incidents() for action in incident.actions]

    def settled_incident(self, rule: str, timeout: float = 90.0) -> Incident:
        """Wait until an incident of ``rule`` is closed (recovered, hold, ...) and return it."""

        def closed() -> Incident | None:
            for incident in self.incidents():
                if incident.rule == rule and incident.outcome != "open":
                    return incident
            return None

        return wait_for(closed, f"a closed {rule} incident", timeout=timeout, log=self.log_tail)

    def health(self) -> int:
        try:
            with self.client() as client:
                return client.get("/health").status_code
        except httpx.HTTPError:
            return 0

    def log_tail(self, lines: int = 60) -> str:
        if not self.daemon_log.exists():
            return ""
        return "\n".join(self.daemon_log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running_stack(root: Path, **options: Any) -> Iterator[Stack]:
    stack = Stack(root, **options)
    try:
        stack.set_up()
        stack.start_daemon()
        assert stack.revision() == CLEAN_HEAD
        yield stack
    finally:
        stack.tear_down()
