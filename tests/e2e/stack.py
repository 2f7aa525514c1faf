"""A whole stack for the runbook's scenarios: the example service (controlled by rollbackd's `command` kind),
seeded, and a real `rollbackd run` process watching it with short intervals. Faults are injected with the
example's own `fault` command; outcomes are read through rollbackd's CLI, its state DB and the service's HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from rollbackd.state.history import History, Incident
from tests.support.vbrpg_service import CLEAN_HEAD, free_port

T = TypeVar("T")
PYTHON = sys.executable
VBRPG = [PYTHON, "-m", "vbrpg_example"]
ROOM = "E2E001"

SMOKE = """
[[service.verify.smoke]]
name = "create room"
method = "POST"
path = "/api/rooms"
json = { name = "rollbackd smoke", host_name = "rollbackd-smoke-host" }
expect_status = [201]
capture = { code = "code" }

[[service.verify.smoke]]
name = "join room"
method = "POST"
path = "/api/rooms/{code}/join"
json = { player_name = "rollbackd-smoke-player" }
expect_status = [200, 201]

[[service.verify.smoke]]
name = "add AI agent"
method = "POST"
path = "/api/rooms/{code}/agents"
expect_status = [200, 201]

[[service.verify.smoke]]
name = "remove AI agent"
method = "DELETE"
path = "/api/rooms/{code}/agents"

[[service.verify.smoke]]
name = "leave room"
method = "POST"
path = "/api/rooms/{code}/leave"
json = { player_name = "rollbackd-smoke-player" }

[[service.verify.smoke]]
name = "delete room"
method = "DELETE"
path = "/api/rooms/{code}"
expect_status = [200, 204]
cleanup = true

[[service.verify.smoke]]
name = "remove smoke player"
method = "DELETE"
path = "/api/players/rollbackd-smoke-player"
expect_status = [200, 404]
cleanup = true

[[service.verify.smoke]]
name = "remove smoke host"
method = "DELETE"
path = "/api/players/rollbackd-smoke-host"
expect_status = [200, 404]
cleanup = true
"""

# Shorter "for" durations than the defaults, so each scenario takes seconds; the logic is the built-in rules'.
FAST_RULES = """
[[service.rules]]
name = "health-failing"
for = "2s"

[[service.rules]]
name = "post-deploy-health"
for = "2s"

[[service.rules]]
name = "migration-failed"
for = "2s"

[[service.rules]]
name = "schema-ahead"
for = "1s"

[[service.rules]]
name = "process-down"
for = "1s"
"""


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 60.0, step: float = 0.25) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


@dataclass
class Stack:
    root: Path
    rooms: int = 200
    players: int = 400
    participants_per_room: int = 3
    dry_run: bool = False
    latency_bound: str = "1s"
    probe_every: str | None = "500ms"  # None: the probes' default intervals
    fast_rules: bool = True
    code_rollback: bool = False
    extra_config: str = ""
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    daemon: subprocess.Popen[bytes] | None = None

    @property
    def workdir(self) -> Path:
        return self.root / "vbrpg"

    @property
    def database(self) -> Path:
        return self.workdir / "data" / "vbrpg.db"

    @property
    def config_path(self) -> Path:
        return self.root / "rollbackd.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def daemon_log(self) -> Path:
        return self.root / "rollbackd.log"

    # Setting up

    def set_up(self) -> None:
        self.vbrpg("init-app", self.workdir, "--db", self.database)
        (self.workdir / "run").mkdir()
        self.database.parent.mkdir(exist_ok=True)
        self.vbrpg("migrate", "--db", self.database, "--app-dir", self.workdir)
        self.vbrpg(
            "seed",
            "--db",
            self.database,
            "--rooms",
            self.rooms,
            "--players",
            self.players,
            "--participants-per-room",
            self.participants_per_room,
            "--agents-per-room",
            1,
        )
        self.start_service()
        with self.client() as client:
            response = client.post("/api/rooms", json={"name": "E2E", "host_name": "e2e-host", "code": ROOM})
            assert response.status_code == 201, response.text
        self.write_config()

    def start_service(self) -> None:
        """Start the example service detached, as its `command` control kind does (a subclass may run it otherwise)."""
        self.vbrpg(*self.start_argv()[3:], cwd=self.workdir)

    def stop_service(self) -> None:
        self.vbrpg("stop", "--pidfile", self.workdir / "run" / "vbrpg.pid", check=False)

    def control_config(self) -> str:
        """The [service.control] table and the process probe's way to find the service's pid."""
        start = json.dumps(self.start_argv())
        stop = json.dumps([*VBRPG, "stop", "--pidfile", "run/vbrpg.pid"])
        return f"""
[service.control]
kind = "command"
start = {start}
stop = {stop}
timeout = "60s"
"""

    def process_match(self) -> str:
        return 'pidfile = "run/vbrpg.pid"'

    def start_argv(self) -> list[str]:
        return [*VBRPG, "serve", "--db", "data/vbrpg.db", "--app-dir", ".", "--port", str(self.port), "--chaos",
                "--detach", "--pidfile", "run/vbrpg.pid", "--log-file", "run/vbrpg.log"]  # fmt: skip

    def write_config(self) -> None:
        alembic = json.dumps([str(Path(PYTHON).parent / "alembic")])
        every = f'every = "{self.probe_every}"' if self.probe_every else ""
        quick = 'quick_every = "1s"\nfull_every = "1h"' if self.probe_every else ""
        self.config_path.write_text(
            f"""
[daemon]
state_dir = "{self.state_dir}"
metrics_listen = "127.0.0.1:{self.metrics_port}"
dry_run = {str(self.dry_run).lower()}
shutdown_timeout = "20s"
log_level = "info"

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

[service.probes.health]
{every}
timeout = "2s"

[service.probes.latency]
paths = ["/api/rooms/{ROOM}"]
{every}
window = "10s"

[service.probes.sqlite_lock]
{every}

[service.probes.integrity]
{quick}

[service.probes.schema]
{every}

[service.probes.rows]
{every}

[service.probes.process]
{every}
{self.process_match()}

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
        log = self.daemon_log.open("ab")
        try:
            self.daemon = subprocess.Popen(
                [PYTHON, "-m", "rollbackd", "--config", str(self.config_path), "run"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        wait_for(lambda: self._ready(backup), "the daemon's first probe round and its startup backup", timeout=60)

    def _ready(self, backup: bool = True) -> bool:
        if self.daemon is not None and self.daemon.poll() is not None:
            raise AssertionError(f"rollbackd run exited with {self.daemon.returncode}:\n{self.log_tail()}")
        status = self.status()
        if status is None or not status.get("daemon", {}).get("ready"):
            return False
        return not backup or bool(status["services"]["vbrpg"].get("last_backup"))

    def tear_down(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait(timeout=10)
        self.stop_service()

    # Acting on the stack

    def vbrpg(
        self, *arguments: object, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*VBRPG, *map(str, arguments)], capture_output=True, text=True, timeout=180, check=False, cwd=cwd
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"vbrpg-example {arguments} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def fault(self, name: str, *arguments: object) -> subprocess.CompletedProcess[str]:
        """Inject a fault the way the example does; a failing migration fault's non-zero exit is the point."""
        if name == "kill":
            return self.vbrpg("fault", name, "--pidfile", self.workdir / "run" / "vbrpg.pid", *arguments, check=False)
        if name in ("corrupt", "lock"):
            return self.vbrpg("fault", name, "--db", self.database, *arguments, check=False)
        return self.vbrpg("fault", name, "--db", self.database, "--app-dir", self.workdir, *arguments, check=False)

    def rollbackd(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "rollbackd", "--config", str(self.config_path), *arguments],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10.0)

    # Reading the outcome

    def status(self) -> dict[str, Any] | None:
        result = self.rollbackd("status", "--json")
        if result.returncode not in (0, 1) or not result.stdout.strip():
            return None
        data = json.loads(result.stdout)
        return data if data.get("daemon") else None

    def state(self) -> str | None:
        status = self.status()
        return None if status is None else str(status["services"]["vbrpg"]["policy"]["state"])

    def incidents(self) -> list[Incident]:
        history = History(self.state_dir / "rollbackd.db")
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

        try:
            return wait_for(closed, f"a closed {rule} incident", timeout=timeout)
        except AssertionError as error:  # the daemon's log as it is at the timeout, not as it was at the start
            raise AssertionError(f"{error}\n{self.log_tail()}") from None

    def health(self) -> int:
        try:
            with self.client() as client:
                return client.get("/health").status_code
        except httpx.HTTPError:
            return 0

    def revision(self) -> str | None:
        return self.query("SELECT version_num FROM alembic_version")[0][0]  # type: ignore[no-any-return]

    def counts(self) -> dict[str, int]:
        return {
            table: int(self.query(f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608 - fixed table names
            for table in ("game_rooms", "players", "game_room_participants")
        }

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)) as connection:
            return connection.execute(sql).fetchall()

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
