"""The daemon's Litestream child held paused over the status socket by another process (`rollbackd restore`): a
real child, a real socket, the CLI's own client; the pause answered only once the child has exited, and ended by
the holder's resume or by its death (the kernel closes its connection), never left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from rollbackd.backup.snapshot import take_backup
from rollbackd.config.model import load_config
from rollbackd.exit_codes import ExitCode
from rollbackd.metrics import Metrics
from rollbackd.replication.supervisor import ChildState, LitestreamSupervisor
from rollbackd.runtime.replication_hold import PAUSE_REQUEST, DaemonReplicationPause, Holdable, ReplicationHolds
from rollbackd.runtime.status_client import query_status
from rollbackd.runtime.status_socket import StatusServer
from rollbackd.state.state_dir import StateDir
from tests.backup.helpers import make_database, make_service, rollbackd
from tests.backup.test_restore import control_log, marker_control
from tests.replication.test_supervisor import eventually, service_with

pytestmark = pytest.mark.e2e

HOLDER = """
import sys
from pathlib import Path
from rollbackd.runtime.replication_hold import DaemonReplicationPause
pause = DaemonReplicationPause(Path(sys.argv[1]), "vbrpg")
pause.pause()
print("paused", flush=True)
sys.stdin.read()  # held until killed
"""


def gone(pid: int | None) -> bool:
    return pid is None or not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_pause_over_the_socket_waits_for_the_child_and_ends_with_its_holder(tmp_path: Path) -> None:
    service = service_with(tmp_path, 'type = "file"\npath = "../replica"')
    supervisor = LitestreamSupervisor(service, state_dir=StateDir(tmp_path / "state"), metrics=Metrics())
    settled: list[str] = []

    async def settle() -> None:
        settled.append("settled")

    holds = ReplicationHolds(lambda name: Holdable(supervisor, settle) if name == "vbrpg" else None)
    socket_path = tmp_path / "s" / "rollbackd.sock"
    server = StatusServer(socket_path, lambda: asyncio.sleep(0, {"daemon": {}}), {PAUSE_REQUEST: holds})

    async def scenario() -> None:
        await supervisor.start()
        await server.start()
        try:
            await eventually(lambda: supervisor.running, "the child runs")
            # The status request still answers, from a client that names it.
            assert await asyncio.to_thread(query_status, socket_path) == {"daemon": {}}

            # Paused and resumed by the CLI's client: pause() returns with the child gone, resume() with a new one.
            first = supervisor.pid
            client = DaemonReplicationPause(socket_path, "vbrpg")
            await asyncio.to_thread(client.pause)
            assert gone(first) and supervisor.state is ChildState.PAUSED
            await supervisor.pause_async()  # a second pause (the daemon's own restore): counted
            await asyncio.to_thread(client.resume)
            assert supervisor.state is ChildState.PAUSED, "one pause is still held"
            await supervisor.resume_async()
            assert supervisor.running and supervisor.pid != first and settled == []

            # A service the daemon runs no child for: nothing to pause, and resume() has nothing to end.
            other = DaemonReplicationPause(socket_path, "other")
            await asyncio.to_thread(other.pause)
            await asyncio.to_thread(other.resume)
            assert supervisor.running

            # The holder dies without a resume: the kernel closes its connection, the daemon settles what it may
            # have left half done and only then starts the child again.
            second = supervisor.pid
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(socket_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert holder.stdout is not None
                assert await asyncio.to_thread(holder.stdout.readline) == "paused\n"
                assert gone(second) and supervisor.state is ChildState.PAUSED
                os.kill(holder.pid, signal.SIGKILL)
            finally:
                holder.wait(timeout=30)
                if holder.stdin is not None:
                    holder.stdin.close()
                if holder.stdout is not None:
                    holder.stdout.close()
            await eventually(lambda: supervisor.running, "the child started again after its holder died")
            assert supervisor.pid not in (first, second) and settled == ["settled"]
        finally:
            await server.close()
            await supervisor.stop()

    asyncio.run(scenario())


def test_a_daemon_that_does_not_pause_refuses_the_swap(tmp_path: Path) -> None:
    """A daemon that does not know the request (no handler for it) must not be taken for one that paused its
    child: the CLI swaps nothing."""
    from rollbackd.replication.pause import ReplicationControlError

    socket_path = tmp_path / "s" / "rollbackd.sock"
    server = StatusServer(socket_path, lambda: asyncio.sleep(0, {"daemon": {"ready": True}}))

    async def scenario() -> None:
        await server.start()
        try:
            client = DaemonReplicationPause(socket_path, "vbrpg")
            with pytest.raises(ReplicationControlError, match="did not pause"):
                await asyncio.to_thread(client.pause)
        finally:
            await server.close()

    asyncio.run(scenario())


def test_a_restore_by_hand_swaps_nothing_when_the_daemon_does_not_pause(tmp_path: Path) -> None:
    """`rollbackd restore` from a local backup, a daemon answering on the socket that does not pause: the
    command ends with a clear error, the service was never stopped and the database is as it was."""
    replication = f'replication = {{ replicas = [{{ type = "file", path = "{tmp_path / "offsite"}" }}] }}'
    service = make_service(tmp_path, control=marker_control(tmp_path), extra=replication)
    make_database(service.database, players=3)
    take_backup(service, reason="manual")
    before = service.database.read_bytes()
    config = tmp_path / "rollbackd.toml"
    socket_path = load_config(config).daemon.socket_path
    server = StatusServer(socket_path, lambda: asyncio.sleep(0, {"daemon": {"ready": True}}))

    async def scenario() -> subprocess.CompletedProcess[str]:
        await server.start()
        try:
            return await asyncio.to_thread(rollbackd, config, "restore", "--yes")
        finally:
            await server.close()

    result = asyncio.run(scenario())

    assert result.returncode == ExitCode.UNAVAILABLE, result.stdout + result.stderr
    assert "did not pause its Litestream child" in result.stderr and "nothing was touched" in result.stderr
    assert service.database.read_bytes() == before
    assert control_log(tmp_path) == []  # never stopped
    assert not list(service.database.parent.glob("*_corrupted_*"))
