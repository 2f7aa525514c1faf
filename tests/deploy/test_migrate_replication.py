"""A failed `rollbackd migrate` restores its pre-deploy backup with the daemon's Litestream child paused, as a
`rollbackd restore` by hand does: a real child, the daemon's real status socket and pause handler, the real
example service and its data-loss migration. A daemon that answers but does not pause gets nothing swapped."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from rollbackd.config.model import load_config
from rollbackd.metrics import Metrics
from rollbackd.replication.supervisor import LitestreamSupervisor
from rollbackd.runtime.replication_hold import PAUSE_REQUEST, Holdable, ReplicationHolds
from rollbackd.runtime.status_socket import StatusServer
from rollbackd.state.state_dir import StateDir
from tests.replication.test_supervisor import eventually
from tests.support.deploy_app import DeployApp, make_deploy_app
from tests.support.vbrpg_service import CLEAN_HEAD

pytestmark = pytest.mark.e2e


def replicated_app(tmp_path: Path) -> DeployApp:
    replication = f'[service.replication]\n[[service.replication.replicas]]\ntype = "file"\npath = "{tmp_path}/offsite"'
    app = make_deploy_app(tmp_path / "deploy", extra_config=replication)
    app.start()
    return app


async def nothing_to_settle() -> None:
    return None


def migrate(app: DeployApp) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    result = app.rollbackd("migrate", "--json", "--window", "2")
    return result, json.loads(result.stdout)


def test_the_restore_of_a_failed_deploy_pauses_the_daemons_litestream_child(tmp_path: Path) -> None:
    app = replicated_app(tmp_path)
    try:
        app.add_fault_migration("data-loss")
        counts = app.counts()
        config = load_config(app.config)
        service = config.service[0]
        supervisor = LitestreamSupervisor(service, state_dir=StateDir(config.daemon.state_dir), metrics=Metrics())
        holds = ReplicationHolds(lambda name: Holdable(supervisor, nothing_to_settle) if name == "vbrpg" else None)
        server = StatusServer(
            config.daemon.socket_path, lambda: asyncio.sleep(0, {"daemon": {}}), {PAUSE_REQUEST: holds}
        )

        async def scenario() -> tuple[
            tuple[int | None, int | None], subprocess.CompletedProcess[str], dict[str, object]
        ]:
            await supervisor.start()
            await server.start()
            try:
                await eventually(lambda: supervisor.running, "the child runs")
                before = supervisor.pid
                result, report = await asyncio.to_thread(migrate, app)
                await eventually(lambda: supervisor.running, "the child runs again after the restore")
                return (before, supervisor.pid), result, report
            finally:
                await server.close()
                await supervisor.stop()

        (before, after), result, report = asyncio.run(scenario())

        assert result.returncode == 1 and report["outcome"] == "rolled_back", result.stderr
        assert app.counts() == counts and app.revision() == CLEAN_HEAD
        # The child that replicated the file before the swap was stopped for it; a new one follows the restored
        # file (a new lineage).
        assert after is not None and after != before
    finally:
        app.stop()


def test_a_failed_deploy_swaps_nothing_when_the_daemon_does_not_pause(tmp_path: Path) -> None:
    """A daemon on the socket that does not know the pause request (an older one): the restore is refused with
    the reason, nothing is swapped, and the report says a person must look."""
    app = replicated_app(tmp_path)
    try:
        app.add_fault_migration("data-loss")
        config = load_config(app.config)
        server = StatusServer(config.daemon.socket_path, lambda: asyncio.sleep(0, {"daemon": {"ready": True}}))

        async def scenario() -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
            await server.start()
            try:
                return await asyncio.to_thread(migrate, app)
            finally:
                await server.close()

        result, report = asyncio.run(scenario())

        assert result.returncode == 1 and report["outcome"] == "failed", result.stderr
        assert "did not pause its Litestream child" in result.stderr and "nothing was touched" in result.stderr
        assert not list(app.database.parent.glob("*_corrupted_*"))  # never swapped
    finally:
        app.stop()
