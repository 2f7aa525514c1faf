"""The example service as a deploy meets it: an app dir (the runbook's backend/) with a seeded database, run
detached through the `command` control kind, a rollbackd config for it, and migration scripts dropped into its
versions dir the way a `git pull` brings them (written, not applied)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rollbackd.state.history import History
from tests.support.vbrpg_service import CLEAN_HEAD, free_port, kill_detached, run_cli
from vbrpg_example.faults.catalog import FAULTS
from vbrpg_example.faults.migration_faults import render_script

BIN = Path(sys.executable).parent
ROOMS = 6
PLAYERS = 12
CLEAN_REVISION = "3f7a1c9e5b20"
CLEAN_SCRIPT = f'''"""Add a nullable description to rooms (a clean, reversible migration).

Revision ID: {CLEAN_REVISION}
Revises: {CLEAN_HEAD}
"""

import sqlalchemy as sa
from alembic import op

revision = "{CLEAN_REVISION}"
down_revision = "{CLEAN_HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("game_rooms", sa.Column("description", sa.String(200), nullable=True))


def downgrade() -> None:
    op.drop_column("game_rooms", "description")
'''

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
expect_status = [201]

[[service.verify.smoke]]
name = "delete room"
method = "DELETE"
path = "/api/rooms/{code}"
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


@dataclass(frozen=True)
class DeployApp:
    root: Path
    port: int

    @property
    def app_dir(self) -> Path:
        return self.root / "app"

    @property
    def database(self) -> Path:
        return self.app_dir / "data" / "vbrpg.db"

    @property
    def versions_dir(self) -> Path:
        return self.app_dir / "alembic" / "versions"

    @property
    def pidfile(self) -> Path:
        return self.root / "run" / "vbrpg.pid"

    @property
    def config(self) -> Path:
        return self.root / "rollbackd.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def backup_dir(self) -> Path:
        return self.app_dir / "data" / "backups"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the app and its service ------------------------------------------------------------------------------

    def create(
        self, *, extra_config: str = "", alembic_env: dict[str, str] | None = None, metrics_port: int | None = None
    ) -> DeployApp:
        """init-app, migrate to the clean head, seed ROOMS rooms with two seats each; write the rollbackd config."""
        self.vbrpg("init-app", self.app_dir, "--db", self.database)
        self.database.parent.mkdir(parents=True, exist_ok=True)
        self.vbrpg("migrate", "--db", self.database, "--app-dir", self.app_dir)
        self.vbrpg("seed", "--db", self.database, "--rooms", ROOMS, "--players", PLAYERS, "--participants-per-room", 2)
        self.write_config(extra_config=extra_config, alembic_env=alembic_env, metrics_port=metrics_port)
        return self

    def start_argv(self) -> list[str]:
        return [
            str(BIN / "vbrpg-example"), "serve", "--db", str(self.database), "--app-dir", str(self.app_dir),
            "--port", str(self.port), "--detach", "--pidfile", str(self.pidfile), "--chaos",
        ]  # fmt: skip

    def write_config(
        self, *, extra_config: str = "", alembic_env: dict[str, str] | None = None, metrics_port: int | None = None
    ) -> None:
        stop = [str(BIN / "vbrpg-example"), "stop", "--pidfile", str(self.pidfile)]
        env = ", ".join(f"{key} = {json.dumps(value)}" for key, value in (alembic_env or {}).items())
        self.config.write_text(
            f"""
[daemon]
state_dir = "{self.state_dir}"
metrics_listen = "{f"127.0.0.1:{metrics_port}" if metrics_port else ""}"
shutdown_timeout = "10s"

[[service]]
name = "vbrpg"
workdir = "{self.app_dir}"
database = "data/vbrpg.db"
base_url = "{self.base_url}"

[service.alembic]
command = [{json.dumps(str(BIN / "alembic"))}]
env = {{ {env} }}

[service.control]
kind = "command"
start = {json.dumps(self.start_argv())}
stop = {json.dumps(stop)}

[service.backups]
dir = "data/backups"
min_free_bytes = 0
min_free_ratio = 0.0

[service.policy]
verify_timeout = "20s"
{extra_config}
{SMOKE}
"""
        )

    def start(self) -> None:
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.vbrpg(*self.start_argv()[1:])

    def stop(self) -> None:
        if self.pidfile.exists():
            run_cli("stop", "--pidfile", self.pidfile)
        kill_detached(self.pidfile)

    def health(self) -> httpx.Response:
        return httpx.get(f"{self.base_url}/health", timeout=10, trust_env=False)

    def chaos(self, **settings: float) -> None:
        response = httpx.post(f"{self.base_url}/chaos", json=settings, timeout=10, trust_env=False)
        response.raise_for_status()

    def vbrpg(self, *arguments: object) -> subprocess.CompletedProcess[str]:
        result = run_cli(*arguments)
        assert result.returncode == 0, f"vbrpg-example {arguments}: {result.stdout}{result.stderr}"
        return result

    # -- the code a deploy brings ---------------------------------------------------------------------------

    def add_clean_migration(self) -> str:
        (self.versions_dir / f"{CLEAN_REVISION}_add_room_description.py").write_text(CLEAN_SCRIPT)
        return CLEAN_REVISION

    def add_fault_migration(self, name: str, *, on: str = CLEAN_HEAD) -> str:
        """Put the fault's script on top of ``on``, as `vbrpg-example fault NAME` does, without running it."""
        fault = next(fault for fault in FAULTS if fault.name == name)
        assert fault.script is not None and fault.revision is not None
        (self.versions_dir / fault.script).write_text(render_script(fault, on))
        return fault.revision

    # -- looking at the database and the history ----------------------------------------------------------------

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)) as connection:
            return connection.execute(sql).fetchall()

    def revision(self) -> str | None:
        rows = self.query("SELECT version_num FROM alembic_version")
        return str(rows[0][0]) if rows else None

    def counts(self) -> dict[str, int]:
        """Rows per core table, leaving out smoke players (the cleanup steps remove them; a failed run may not)."""
        queries = {
            "game_rooms": "SELECT count(*) FROM game_rooms",
            "players": "SELECT count(*) FROM players WHERE name NOT LIKE 'rollbackd-smoke-%'",
            "game_room_participants": "SELECT count(*) FROM game_room_participants",
        }
        return {table: int(self.query(sql)[0][0]) for table, sql in queries.items()}

    def tables(self) -> set[str]:
        return {str(row[0]) for row in self.query("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def history(self) -> History:
        history = History(self.state_dir / "rollbackd.db")
        history.upgrade()
        return history

    def rollbackd(self, *arguments: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rollbackd", "--config", str(self.config), *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )


def make_deploy_app(root: Path, **options: Any) -> DeployApp:
    return DeployApp(root, free_port()).create(**options)


HOLDER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("INSERT INTO players (name) VALUES ('held-open writer')")
print("ready", flush=True)
sys.stdin.read()
connection.close()
"""


@contextlib.contextmanager
def held_open(database: Path) -> Iterator[None]:
    """Another process with the database open after one write, as a live service keeps it: -wal and -shm exist."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        assert process.stdout.readline().strip() == "ready"
        yield
    finally:
        process.stdin.close()
        process.wait(timeout=30)
        process.stdout.close()


def file_marks(database: Path) -> dict[str, tuple[bool, int, str]]:
    """(exists, size, sha256) of the database and its -wal; (exists, size, "") of its -shm (readers write there)."""
    marks = {}
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{database}{suffix}")
        if not path.exists():
            marks[suffix] = (False, 0, "")
            continue
        digest = "" if suffix == "-shm" else hashlib.sha256(path.read_bytes()).hexdigest()
        marks[suffix] = (True, path.stat().st_size, digest)
    return marks
