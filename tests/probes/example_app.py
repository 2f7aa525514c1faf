"""The example VBRPG service as the probe and daemon tests use it: an app dir in tmp_path, served on a free port,
driven only through its own `vbrpg-example` command line (as an operator or a deploy would)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

VBRPG_EXAMPLE = str(Path(sys.executable).parent / "vbrpg-example")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class VbrpgApp:
    root: Path
    port: int = 0

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

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [VBRPG_EXAMPLE, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"vbrpg-example {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}"
            )
        return result

    def create(self, *, journal_mode: str = "wal", rooms: int = 20) -> VbrpgApp:
        self.database.parent.mkdir(parents=True, exist_ok=True)
        self.run("init-app", str(self.app_dir), "--db", str(self.database))
        self.run("migrate", "--db", str(self.database), "--app-dir", str(self.app_dir), "--journal-mode", journal_mode)
        self.run(
            "seed", "--db", str(self.database), "--rooms", str(rooms), "--players", str(rooms * 2),
            "--participants-per-room", "2",
        )  # fmt: skip
        return self

    def copy_to(self, root: Path) -> VbrpgApp:
        """A copy of this app dir and database at ``root`` (its alembic.ini pointed at the copied database)."""
        shutil.copytree(self.root, root, ignore=shutil.ignore_patterns("run"))
        copy = VbrpgApp(root)
        copy.run("init-app", str(copy.app_dir), "--db", str(copy.database), "--force")
        return copy

    def serve(self) -> None:
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.run(
            "serve", "--db", str(self.database), "--app-dir", str(self.app_dir), "--port", str(self.port),
            "--chaos", "--pidfile", str(self.pidfile), "--detach",
        )  # fmt: skip

    def stop(self) -> None:
        self.run("stop", "--pidfile", str(self.pidfile), check=False)

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def fault(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Inject a fault; migration faults get the app dir, file faults (corrupt, lock) only the database."""
        where = ["--db", str(self.database)]
        if name not in ("corrupt", "lock"):
            where += ["--app-dir", str(self.app_dir)]
        return self.run("fault", name, *where, *args, check=check)

    def migrate(self, target: str = "head") -> None:
        self.run("migrate", "--db", str(self.database), "--app-dir", str(self.app_dir), target)

    def chaos(self, **settings: Any) -> None:
        response = httpx.post(f"{self.base_url}/chaos", json=settings, trust_env=False, timeout=10)
        response.raise_for_status()

    def create_room(self, name: str = "probe target") -> str:
        response = httpx.post(
            f"{self.base_url}/api/rooms", json={"name": name, "host_name": "probe-host"}, trust_env=False, timeout=10
        )
        response.raise_for_status()
        return str(response.json()["code"])


@pytest.fixture(scope="session")
def vbrpg_template(tmp_path_factory: pytest.TempPathFactory) -> VbrpgApp:
    """Made once per session: init-app, migrate to head (WAL), seed. Tests work on copies."""
    return VbrpgApp(tmp_path_factory.mktemp("vbrpg-template")).create()


@pytest.fixture
def vbrpg_app(tmp_path: Path, vbrpg_template: VbrpgApp) -> VbrpgApp:
    """An app dir with its database migrated to head and seeded (not served), this test's own copy."""
    return vbrpg_template.copy_to(tmp_path / "vbrpg")


@pytest.fixture
def served_vbrpg(vbrpg_app: VbrpgApp) -> Iterator[VbrpgApp]:
    """The example service running (with /chaos) on a free loopback port; stopped after the test."""
    vbrpg_app.serve()
    pid = vbrpg_app.pid()
    yield vbrpg_app
    vbrpg_app.stop()
    if pid is not None:  # stop refuses a pid that is not a live `vbrpg-example serve`; make sure nothing is left
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
