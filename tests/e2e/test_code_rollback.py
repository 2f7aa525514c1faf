"""The runbook's full service rollback (section 2): restore the database AND check out the previous code.

With `[service.policy] code_rollback = true` and the service's code in git, a deploy that loses data is undone
all the way: the commit recorded before the deploy window opened is checked out again, then the pre-deploy
backup restored, and the service started on the old code with the old data.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rollbackd.target.alembic_scripts import parse_script
from tests.support.git_repo import git
from tests.support.rollbackd_daemon import wait_for
from tests.support.stack import Stack
from tests.support.vbrpg_service import CLEAN_HEAD, FAULT_REVISIONS

pytestmark = pytest.mark.e2e


def bad_migration(tmp_path: Path) -> Path:
    """The data-loss fault's script as a developer would commit it: applied once on a scratch copy to get it
    rendered on top of the clean head."""
    scratch = Stack(tmp_path / "scratch")
    scratch.vbrpg("init-app", scratch.workdir, "--db", scratch.database)
    scratch.database.parent.mkdir()
    scratch.vbrpg("migrate", "--db", scratch.database, "--app-dir", scratch.workdir)
    scratch.fault("data-loss")
    [script] = (scratch.workdir / "alembic" / "versions").glob(f"{FAULT_REVISIONS['data-loss']}_*.py")
    return script


def test_data_loss_deploy_is_undone_with_code_and_database(tmp_path: Path) -> None:
    script = bad_migration(tmp_path)
    stack = Stack(tmp_path / "live", code_rollback=True)
    try:
        stack.set_up()
        (stack.workdir / ".gitignore").write_text("data/\nrun/\n__pycache__/\n")
        git(stack.workdir, "init", "--quiet")
        git(stack.workdir, "add", "-A")
        git(stack.workdir, "commit", "--quiet", "-m", "v1")
        good = git(stack.workdir, "rev-parse", "HEAD")
        git(stack.workdir, "checkout", "--quiet", "-b", "release")
        stack.start_daemon()
        before = stack.counts()

        # The deploy: new code with the bad migration arrives (git), then `alembic upgrade head` runs.
        target = stack.workdir / "alembic" / "versions" / script.name
        shutil.copy2(script, target)
        assert parse_script(target).revision == FAULT_REVISIONS["data-loss"]
        git(stack.workdir, "add", "-A")
        git(stack.workdir, "commit", "--quiet", "-m", "v2: purge stale rooms")
        stack.vbrpg("migrate", "--db", stack.database, "--app-dir", stack.workdir, check=False)

        incident = stack.settled_incident("data-loss")
        assert incident.outcome == "recovered", incident.notes
        [restore] = incident.actions
        assert restore.detail["code_commit"] == good
        assert ["git", "-C", str(stack.workdir), "checkout", "--quiet", good] in [c["argv"] for c in restore.commands]
        assert git(stack.workdir, "rev-parse", "HEAD") == good
        assert not target.exists()
        assert stack.revision() == CLEAN_HEAD
        assert stack.counts()["game_rooms"] == before["game_rooms"]
        assert wait_for(lambda: stack.health() == 200, "health after the full rollback")
    finally:
        stack.tear_down()
