"""The example VBRPG service as the probe and daemon tests drive it: an app dir and database in tmp_path, served
on a free port, changed only through `vbrpg-example` (as an operator or a deploy would). Built on the shared
helpers in tests/support/vbrpg_service.py."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.vbrpg_service import ExampleService, run_cli, start_service


@dataclass
class VbrpgApp:
    root: Path
    service: ExampleService | None = None
    port: int = 9  # until served; kept after stop so a probe finds the port closed

    @property
    def app_dir(self) -> Path:
        return self.root / "app"

    @property
    def database(self) -> Path:
        return self.root / "data" / "vbrpg.db"

    @property
    def versions_dir(self) -> Path:
        return self.app_dir / "alembic" / "versions"

    @property
    def pidfile(self) -> Path:
        return self.root / "run" / "vbrpg.pid"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, *args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = run_cli(*args)
        if check and result.returncode != 0:
            output = result.stdout + result.stderr
            raise AssertionError(f"vbrpg-example {' '.join(map(str, args))}: exit {result.returncode}\n{output}")
        return result

    def create(self, *, journal_mode: str = "wal", rooms: int = 20) -> VbrpgApp:
        """init-app, migrate to head, seed ``rooms`` rooms with two seats each (``rooms * 2`` players)."""
        self.database.parent.mkdir(parents=True, exist_ok=True)
        self.run("init-app", self.app_dir, "--db", self.database)
        self.run("migrate", "--db", self.database, "--app-dir", self.app_dir, "--journal-mode", journal_mode)
        self.run("seed", "--db", self.database, "--rooms", rooms, "--players", rooms * 2, "--participants-per-room", 2)
        return self

    def copy_to(self, root: Path) -> VbrpgApp:
        """A copy of this app dir and database at ``root`` (its alembic.ini pointed at the copied database)."""
        shutil.copytree(self.root, root, ignore=shutil.ignore_patterns("run"))
        copy = VbrpgApp(root)
        copy.run("init-app", copy.app_dir, "--db", copy.database, "--force")
        return copy

    def serve(self) -> None:
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.service = start_service(
            self.database, self.app_dir, self.root / "run" / "service.log", chaos=True, pidfile=self.pidfile
        )
        self.port = self.service.port

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None

    def fault(self, name: str, *args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Inject a fault; migration faults get the app dir, file faults (corrupt, lock) only the database."""
        where: list[object] = ["--db", self.database]
        if name not in ("corrupt", "lock"):
            where += ["--app-dir", self.app_dir]
        return self.run("fault", name, *where, *args, check=check)

    def migrate(self, target: str = "head") -> None:
        self.run("migrate", "--db", self.database, "--app-dir", self.app_dir, target)

    def chaos(self, **settings: Any) -> None:
        response = httpx.post(f"{self.base_url}/chaos", json=settings, trust_env=False, timeout=10)
        response.raise_for_status()

    def create_room(self, name: str = "probe target") -> str:
        response = httpx.post(
            f"{self.base_url}/api/rooms", json={"name": name, "host_name": "probe-host"}, trust_env=False, timeout=10
        )
        response.raise_for_status()
        return str(response.json()["code"])


@contextmanager
def serving(app: VbrpgApp) -> Iterator[VbrpgApp]:
    """The example service running (with /chaos and a pidfile) on a free loopback port until the block ends."""
    app.serve()
    try:
        yield app
    finally:
        app.stop()
