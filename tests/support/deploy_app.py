"""The example service as a deploy meets it: an app dir (the runbook's backend/) with a seeded database, run
detached through the `command` control kind, a rollbackd config for it, and migration scripts dropped into its
versions dir the way a `git pull` brings them (written, not applied)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx

from rollbackd.state.history import History
from tests.support.rollbackd_config import SMOKE, daemon_toml
from tests.support.vbrpg_install import VbrpgInstall
from tests.support.vbrpg_service import CLEAN_HEAD
from vbrpg_example.faults.catalog import FAULTS
from vbrpg_example.faults.migration_faults import render_script

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


@dataclass
class DeployApp(VbrpgInstall):
    WORKDIR: ClassVar[str] = "app"
    COUNT_SMOKE_PLAYERS: ClassVar[bool] = False

    @property
    def app_dir(self) -> Path:
        return self.workdir

    @property
    def config(self) -> Path:
        return self.config_path

    @property
    def pidfile(self) -> Path:
        """Outside the app dir, which a test may keep in git."""
        return self.root / "run" / "vbrpg.pid"

    @property
    def versions_dir(self) -> Path:
        return self.app_dir / "alembic" / "versions"

    @property
    def backup_dir(self) -> Path:
        return self.app_dir / "data" / "backups"

    # -- the app and its service ------------------------------------------------------------------------------

    def create(
        self, *, extra_config: str = "", alembic_env: dict[str, str] | None = None, metrics_port: int | None = None
    ) -> DeployApp:
        """init-app, migrate to the clean head, seed ROOMS rooms with two seats each; write the rollbackd config."""
        self.install(rooms=ROOMS, players=PLAYERS, participants_per_room=2)
        self.write_config(extra_config=extra_config, alembic_env=alembic_env, metrics_port=metrics_port)
        return self

    def write_config(
        self, *, extra_config: str = "", alembic_env: dict[str, str] | None = None, metrics_port: int | None = None
    ) -> None:
        env = ", ".join(f"{key} = {json.dumps(value)}" for key, value in (alembic_env or {}).items())
        self.config.write_text(
            daemon_toml(self.state_dir, metrics_port, shutdown_timeout="10s", log_level=None)
            + f"""
[[service]]
name = "vbrpg"
workdir = "{self.app_dir}"
database = "data/vbrpg.db"
base_url = "{self.base_url}"

[service.alembic]
command = [{json.dumps(str(Path(sys.executable).parent / "alembic"))}]
env = {{ {env} }}
{self.control_config()}
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
        self.start_service()

    def stop(self) -> None:
        self.stop_service()

    def health(self) -> httpx.Response:
        with self.client() as client:
            return client.get("/health")

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

    # -- the history ----------------------------------------------------------------------------------------

    def history(self) -> History:
        """The state DB, created if no daemon or command has yet (the caller closes it)."""
        history = super().history()
        history.upgrade()
        return history


def make_deploy_app(root: Path, **options: Any) -> DeployApp:
    return DeployApp(root).create(**options)
