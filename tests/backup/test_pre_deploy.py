"""A migration script arriving in a real app dir's versions/ gets a pre-deploy backup before the upgrade runs."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from rollbackd.backup.catalog import list_backups
from rollbackd.backup.pre_deploy import read_pre_deploy
from rollbackd.backup.schedule import BackupScheduler
from rollbackd.config.model import parse_config
from rollbackd.state.state_dir import StateDir
from rollbackd.target.watch import DeployWatcher

from .helpers import REVISION, ExampleApp, rollbackd

NEW_MIGRATION = f'''"""Give players a nickname."""

import sqlalchemy as sa
from alembic import op

revision = "9f1e2d3c4b5a"
down_revision = "{REVISION}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("players") as batch:
        batch.add_column(sa.Column("nickname", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("players") as batch:
        batch.drop_column("nickname")
'''


@pytest.mark.e2e
def test_a_migration_script_arriving_gets_a_pre_deploy_backup_before_the_upgrade(
    tmp_path: Path, example: ExampleApp
) -> None:
    text = f"""
[daemon]
state_dir = "{tmp_path / "state"}"
[[service]]
name = "vbrpg"
workdir = "{example.app_dir}"
database = "data/vbrpg.db"
base_url = "{example.base_url}"
[service.backups]
every = "1h"
drill_every = "0s"
min_free_bytes = 0
min_free_ratio = 0.0
"""
    config = tmp_path / "rollbackd.toml"
    config.write_text(text)
    service = parse_config(text, config).service[0]
    assert service.versions_dir == example.app_dir / "alembic" / "versions"
    state_dir = StateDir(tmp_path / "state")
    assert rollbackd(config, "backup").returncode == 0  # a fresh scheduled-style backup: no start-up backup
    arriving = tmp_path / "9f1e2d3c4b5a_give_players_a_nickname.py"
    arriving.write_text(NEW_MIGRATION)

    async def deploy() -> None:
        scheduler = BackupScheduler(service, state_dir=state_dir)
        watcher = DeployWatcher(service, scheduler.on_deploy_event)
        task = asyncio.create_task(scheduler.run())
        watcher.start()
        try:
            deadline = time.monotonic() + 30
            while scheduler.known_revision is None:  # the scheduler has loaded what is on disk
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            shutil.copy(arriving, service.versions_dir / arriving.name)  # the deploy copies the new code in
            while read_pre_deploy(state_dir.service_dir("vbrpg")) is None:
                assert time.monotonic() < deadline, "no pre-deploy backup"
                await asyncio.sleep(0.02)
            # Only now does the deploy run its migration.
            await asyncio.to_thread(
                example.cli, "migrate", "--db", str(example.database), "--app-dir", str(example.app_dir)
            )
            assert await scheduler.on_revision_change(REVISION, "9f1e2d3c4b5a") is None  # covered: no fallback
        finally:
            watcher.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(deploy())
    record = read_pre_deploy(state_dir.service_dir("vbrpg"))
    assert record is not None and record.source == "watcher" and record.from_revision == REVISION
    backups = {entry.name: entry for entry in list_backups(service.backups.dir, "vbrpg").backups}
    pre_deploy = backups[record.pre_deploy_backup]
    assert pre_deploy.reason == "pre-deploy" and pre_deploy.revision == REVISION
    with closing(sqlite3.connect(pre_deploy.path)) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(players)")]
    assert "nickname" not in columns  # the schema from before the upgrade
    with closing(sqlite3.connect(example.database)) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "9f1e2d3c4b5a"
