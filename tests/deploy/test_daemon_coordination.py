"""The daemon and `rollbackd migrate` or `rollbackd rollback` on the same service: one lock, and the daemon's policy
stands aside while another process holds it to change the database (a migrate watches and undoes its own deploy),
then ignores what it saw meanwhile; a revision change such a command made is no new deploy."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from rollbackd.state.service_lock import ServiceBusy, ServiceLock
from tests.support.deploy_app import DeployApp, make_deploy_app
from tests.support.git_repo import commit_all, git
from tests.support.rollbackd_config import probes_toml
from tests.support.rollbackd_daemon import DaemonProcess, rollbackd_run, wait_for
from tests.support.vbrpg_service import CLEAN_HEAD, free_port


def fast_probes(pidfile: Path) -> str:
    return probes_toml(
        every="200ms", health_timeout="1s", integrity_every="500ms", full_every=None, process=f'pidfile = "{pidfile}"'
    )


def automatic_actions(state_db: Path) -> list[tuple[str, str]]:
    """The automatic actions carried out. One decided on the deploy's evidence in the second before the daemon
    saw migrate's lock waits for the lock and is then superseded, not carried out (tests/actions/test_superseded)."""
    with closing(sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=10)) as connection:
        rows = connection.execute(
            "SELECT action, outcome FROM actions WHERE automatic = 1 AND outcome != 'superseded'"
        ).fetchall()
    return [(str(action), str(outcome)) for action, outcome in rows]


def rows_probe_runs(daemon: DaemonProcess) -> int:
    samples = daemon.scrape()
    count = samples.get("rollbackd_probe_duration_seconds_count", service="vbrpg", probe="rows") if samples else None
    return int(count or 0)


@pytest.mark.e2e
def test_the_daemon_records_no_action_while_migrate_rolls_back_a_data_loss_deploy(tmp_path: Path) -> None:
    app = make_deploy_app(tmp_path, metrics_port=free_port(), extra_config=fast_probes(tmp_path / "run" / "vbrpg.pid"))
    app.start()
    try:
        with rollbackd_run(app.config) as daemon:
            wait_for(lambda: rows_probe_runs(daemon) >= 3, f"the daemon's probes; log:\n{daemon.log_tail()}")
            revision = app.add_fault_migration("data-loss")  # the deploy's git pull: the daemon sees it arrive
            result = app.rollbackd("migrate", "--json", "--window", "3")
            report = json.loads(result.stdout)
            assert result.returncode == 1 and report["outcome"] == "rolled_back", result.stderr
            assert report["blocked"] == [revision] and app.revision() == CLEAN_HEAD
            # More rounds of the policy on fresh observations of the restored, healthy service: nothing to do.
            # (Without the policy standing aside, the daemon restores the pre-deploy backup a second time.)
            seen = rows_probe_runs(daemon)
            wait_for(lambda: rows_probe_runs(daemon) >= seen + 10, "ten more rounds of the rows probe")
            assert automatic_actions(app.state_dir / "rollbackd.db") == [], daemon.log.read_text()[-6000:]
            log = daemon.log.read_text()
            assert "holds the service: the policy waits until it is done" in log
            assert f"rollbackd migrate to {revision} is done: the policy looks again" in log
            assert daemon.process.poll() is None
    finally:
        app.stop()


@pytest.mark.e2e
def test_a_rollback_by_hand_is_not_taken_for_a_deploy_the_daemon_would_undo(tmp_path: Path) -> None:
    """Before: the daemon saw the operator's downgrade as a revision change, opened a deploy window from the bad
    revision, and a failure in it would have "rolled back" to the pre-deploy backup, i.e. undone the rollback."""
    pidfile = tmp_path / "run" / "vbrpg.pid"
    window = '[service.deploy]\nwindow = "2s"\n'
    app = make_deploy_app(tmp_path, metrics_port=free_port(), extra_config=fast_probes(pidfile) + window)
    app.start()
    try:
        with rollbackd_run(app.config) as daemon:
            wait_for(lambda: rows_probe_runs(daemon) >= 3, f"the daemon's probes; log:\n{daemon.log_tail()}")
            revision = app.add_clean_migration()
            deployed = app.rollbackd("migrate", "--window", "1")
            assert deployed.returncode == 0 and app.revision() == revision, deployed.stdout + deployed.stderr
            wait_for(lambda: open_window(app) is None, "the deploy window to close")
            deploys_before = deploy_ids(app)  # the migrate's, and the window its script opened on arrival
            rolled_back = app.rollbackd("rollback", "vbrpg", "--steps", "1")
            assert rolled_back.returncode == 0 and app.revision() == CLEAN_HEAD, rolled_back.stdout
            wait_for(
                lambda: f"{revision} → {CLEAN_HEAD} by rollbackd downgrade (incident 1)" in daemon.log.read_text(),
                f"the daemon to see the downgrade; log:\n{daemon.log_tail()}",
            )
            seen = rows_probe_runs(daemon)
            wait_for(lambda: rows_probe_runs(daemon) >= seen + 10, "ten more rounds of the rows probe")
            assert deploy_ids(app) == deploys_before  # no window opened by the rollback
            assert automatic_actions(app.state_dir / "rollbackd.db") == []
            assert daemon.process.poll() is None
    finally:
        app.stop()


@pytest.mark.e2e
def test_migrate_after_a_git_pull_records_the_commit_from_before_the_pull(tmp_path: Path) -> None:
    """A deploy script pulls, then calls migrate: the commit checked out by then is the new one. The commit to go
    back to is the one the daemon recorded when the pulled migration arrived."""
    pidfile = tmp_path / "run" / "vbrpg.pid"
    app = make_deploy_app(tmp_path, metrics_port=free_port(), extra_config=fast_probes(pidfile))
    (app.app_dir / ".gitignore").write_text("data/\n__pycache__/\n")
    git(app.app_dir, "init", "--quiet")
    before = commit_all(app.app_dir, "v1")
    app.start()
    try:
        with rollbackd_run(app.config) as daemon:
            wait_for(lambda: rows_probe_runs(daemon) >= 3, f"the daemon's probes; log:\n{daemon.log_tail()}")
            app.add_clean_migration()  # the pull: the new commit with its migration
            pulled = commit_all(app.app_dir, "v2: room descriptions")
            wait_for(lambda: open_window(app) is not None, "the daemon to see the migration arrive")
            result = app.rollbackd("migrate", "--window", "1")
            assert result.returncode == 0, result.stdout + result.stderr
    finally:
        app.stop()
    history = app.history()
    try:
        deploy = next(deploy for deploy in history.deploys("vbrpg") if deploy.trigger == "migrate")
    finally:
        history.close()
    assert pulled != before and deploy.code_commit == before


def deploy_ids(app: DeployApp) -> list[int]:
    history = app.history()
    try:
        return [deploy.id for deploy in history.deploys("vbrpg")]
    finally:
        history.close()


def open_window(app: DeployApp) -> object:
    history = app.history()
    try:
        return history.open_deploy_window("vbrpg")
    finally:
        history.close()


def test_inspecting_the_lock_tells_a_holder_now_from_the_last_one_and_never_disturbs_it(tmp_path: Path) -> None:
    lock = ServiceLock(tmp_path, "vbrpg", "rollbackd migrate to 8e4b6c2d0a91")
    assert lock.inspect() is None
    lock.acquire()
    try:
        holder = lock.inspect()
        assert holder is not None and holder.held and holder.purpose == "rollbackd migrate to 8e4b6c2d0a91"
        assert holder.since is not None and holder.pid is not None
        with pytest.raises(ServiceBusy, match="rollbackd migrate to 8e4b6c2d0a91 held by pid"):
            ServiceLock(tmp_path, "vbrpg", "rollbackd restore").acquire(timeout=0)
        assert lock.inspect() == holder  # inspecting left the holder's lock in place
    finally:
        lock.release()
    last = lock.inspect()
    assert last is not None and not last.held and last.purpose == holder.purpose
    assert last.released is not None and last.released >= last.since and not last.changes_database


def test_a_holder_that_changes_the_database_says_so_and_the_stamp_never_leaves_the_file_unreadable(
    tmp_path: Path,
) -> None:
    restore = ServiceLock(tmp_path, "vbrpg", "rollbackd restore", changes_database=True)
    with restore:
        holder = restore.inspect()
        assert holder is not None and holder.held and holder.changes_database and holder.released is None
    # A shorter note after a longer one: the file is cut to the new note, and a reader takes the first object.
    with ServiceLock(tmp_path, "vbrpg", "x"):
        held = restore.inspect()
        assert held is not None and (held.purpose, held.changes_database, held.released) == ("x", False, None)
    restore.path.write_bytes(b'{"pid": 7, "purpose": "rollbackd restore", "since": 1.0}ore", "since": 12')
    torn = restore.inspect()
    assert torn is not None and (torn.pid, torn.purpose, torn.since) == (7, "rollbackd restore", 1.0)
