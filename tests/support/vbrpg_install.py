"""The example service installed in a folder the way an operator has it: an app dir (`init-app`) with its
database migrated to the clean head and seeded, served detached on a port fixed beforehand (as rollbackd's
`command` control serves it), a rollbackd config beside it. Changed only through `vbrpg-example` and read
through SQLite, its HTTP API and rollbackd's CLI and state DB.

The layout is a subclass's to choose (tests/support/stack.py's Stack, tests/support/deploy_app.py's DeployApp):
``workdir`` is the service's working directory; the database lives at ``workdir/data/vbrpg.db``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from rollbackd.state.history import History
from tests.support.detached_service import DetachedService
from tests.support.rollbackd_config import control_toml
from tests.support.rollbackd_daemon import rollbackd_cli
from tests.support.vbrpg_service import free_port, run_cli

CLI_TIMEOUT_SECONDS = 180.0
COUNTED_TABLES = ("game_rooms", "players", "game_room_participants")


@dataclass
class VbrpgInstall:
    root: Path
    port: int = field(default_factory=free_port, kw_only=True)

    WORKDIR: ClassVar[str] = "vbrpg"
    # counts() leaves out players the smoke steps create (their cleanup steps remove them; a failed run may not).
    COUNT_SMOKE_PLAYERS: ClassVar[bool] = True

    @property
    def workdir(self) -> Path:
        return self.root / self.WORKDIR

    @property
    def database(self) -> Path:
        return self.workdir / "data" / "vbrpg.db"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "run" / "vbrpg.pid"

    @property
    def config_path(self) -> Path:
        return self.root / "rollbackd.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- setting it up and serving it ---------------------------------------------------------------------------

    def install(self, *, rooms: int, players: int, participants_per_room: int, agents_per_room: int = 0) -> None:
        """init-app, migrate to the clean head, seed."""
        self.vbrpg("init-app", self.workdir, "--db", self.database)
        self.database.parent.mkdir(parents=True, exist_ok=True)
        self.vbrpg("migrate", "--db", self.database, "--app-dir", self.workdir)
        agents = ("--agents-per-room", agents_per_room) if agents_per_room else ()
        self.vbrpg("seed", "--db", self.database, "--rooms", rooms, "--players", players,
                   "--participants-per-room", participants_per_room, *agents)  # fmt: skip

    @property
    def detached(self) -> DetachedService:
        """How the service is run: absolute paths (a subclass may give paths relative to the workdir)."""
        return DetachedService(self.database, self.workdir, self.port, self.pidfile)

    def start_argv(self) -> list[str]:
        return self.detached.start_argv()

    def start_service(self) -> None:
        """Start the service detached with start_argv(), as its `command` control does (a subclass may run it
        otherwise)."""
        self.detached.start(self.start_argv())

    def stop_service(self) -> None:
        self.detached.stop()

    def control_config(self) -> str:
        """The [service.control] table: rollbackd starts the service with start_argv() too."""
        return control_toml(self.start_argv(), self.detached.stop_argv())

    # -- acting on it -------------------------------------------------------------------------------------------

    def vbrpg(
        self, *arguments: object, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = run_cli(*arguments, timeout=CLI_TIMEOUT_SECONDS, cwd=cwd)
        if check and result.returncode != 0:
            raise AssertionError(
                f"vbrpg-example {arguments} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def rollbackd(self, *arguments: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return rollbackd_cli(self.config_path, *arguments, timeout=timeout)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10.0, trust_env=False)

    def chaos(self, **settings: Any) -> None:
        with self.client() as client:
            client.post("/chaos", json=settings).raise_for_status()

    # -- reading it ---------------------------------------------------------------------------------------------

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)) as connection:
            return connection.execute(sql).fetchall()

    def revision(self) -> str | None:
        rows = self.query("SELECT version_num FROM alembic_version")
        return str(rows[0][0]) if rows else None

    def counts(self) -> dict[str, int]:
        """Rows per core table."""
        smoke = "" if self.COUNT_SMOKE_PLAYERS else " WHERE name NOT LIKE 'rollbackd-smoke-%'"
        return {
            table: int(self.query(f"SELECT count(*) FROM {table}{smoke if table == 'players' else ''}")[0][0])  # noqa: S608 - fixed names
            for table in COUNTED_TABLES
        }

    def tables(self) -> set[str]:
        return {str(row[0]) for row in self.query("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def history(self) -> History:
        """rollbackd's state DB (the caller closes it)."""
        return History(self.state_dir / "rollbackd.db")
