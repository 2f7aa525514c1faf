"""The supervised `litestream replicate` child with real parts: a file replica and a real S3-compatible server
(`rclone serve s3` on 127.0.0.1), wrong credentials, a child that dies in a loop, a rollback-journal database,
and the replication probe reading what the child replicated."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from rollbackd.cli.status import replication_line
from rollbackd.config.model import ServiceConfig
from rollbackd.host.http_client import HttpClient
from rollbackd.metrics import Metrics
from rollbackd.probes.base import ProbeContext
from rollbackd.probes.replication import ReplicationProbe
from rollbackd.replication.litestream import Litestream, ReplicaUnreachable, prepare, read_replica
from rollbackd.replication.supervisor import Backoff, ChildState, LitestreamSupervisor
from rollbackd.state.service_lock import ServiceLock
from rollbackd.state.state_dir import StateDir
from tests.backup.helpers import make_database, make_service
from tests.replication.s3_server import KEY, SECRET, S3Server, rclone_s3
from tests.support.vbrpg_service import free_port

pytestmark = pytest.mark.e2e

CA_BUNDLE = {"AWS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("s3")
    with rclone_s3(root / "data", root / "rclone.log") as server:
        yield server


def service_with(tmp_path: Path, replica: str, replication: str = "", *, journal_mode: str = "wal") -> ServiceConfig:
    extra = f"\n[service.replication]\n{replication}\n[[service.replication.replicas]]\n{replica}\n"
    service = make_service(tmp_path, extra=extra)
    make_database(service.database, journal_mode=journal_mode)
    return service


def s3_service(tmp_path: Path, endpoint: str, bucket: str, secret: str = SECRET) -> ServiceConfig:
    credentials = tmp_path / "s3.env"
    credentials.write_text(f"AWS_ACCESS_KEY_ID={KEY}\nAWS_SECRET_ACCESS_KEY={secret}\n")
    credentials.chmod(0o600)
    replica = (
        f'type = "s3"\nendpoint = "{endpoint}"\nbucket = "{bucket}"\npath = "{tmp_path.name}"\nforce_path_style = true'
    )
    return service_with(tmp_path, replica, f'credentials_file = "{credentials}"')


def add_player(database: Path, name: str) -> None:
    with closing(sqlite3.connect(database, isolation_level=None)) as connection:
        connection.execute("INSERT INTO players (name) VALUES (?)", (name,))


def players_in(database: Path) -> set[str]:
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        return {str(row[0]) for row in connection.execute("SELECT name FROM players")}


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Tests may poll (library code may not): wait for ``predicate`` or fail."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


def replica_holds(litestream: Litestream, scratch: Path, name: str) -> bool:
    """Restore the replica's newest state into ``scratch`` and look for player ``name``."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{scratch}{suffix}").unlink(missing_ok=True)
    result = litestream.run(litestream.restore_argv(scratch), timeout=60)
    return result.ok and scratch.exists() and name in players_in(scratch)


def probe_for(service: ServiceConfig, tmp_path: Path, supervisor: LitestreamSupervisor) -> ReplicationProbe:
    context = ProbeContext(http=HttpClient(), state_dir=StateDir(tmp_path / "state"))
    return ReplicationProbe(service, context, supervisor)


def child_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in raw if b"=" in entry)


def test_the_child_replicates_pauses_for_a_swap_and_resumes(tmp_path: Path) -> None:
    service = service_with(tmp_path, 'type = "file"\npath = "../replica"')
    metrics = Metrics()
    state_dir = StateDir(tmp_path / "state")
    supervisor = LitestreamSupervisor(service, state_dir=state_dir, metrics=metrics)
    litestream = prepare(service, state_dir)
    scratch = tmp_path / "scratch.db"

    async def scenario() -> None:
        await supervisor.start()
        try:
            await eventually(lambda: supervisor.running, "the child runs")
            first_pid = supervisor.pid
            add_player(service.database, "written-while-replicating")
            await eventually(
                lambda: replica_holds(litestream, scratch, "written-while-replicating"), "the row in the replica"
            )
            await asyncio.to_thread(supervisor.pause)  # from a worker thread, as the restore's swap calls it
            assert supervisor.state is ChildState.PAUSED and supervisor.pid is None
            assert first_pid is not None and not Path(f"/proc/{first_pid}").exists()
            add_player(service.database, "written-while-paused")
            await asyncio.to_thread(supervisor.resume)
            assert supervisor.running and supervisor.pid not in (None, first_pid)
            await eventually(lambda: replica_holds(litestream, scratch, "written-while-paused"), "caught up")
            observation = await probe_for(service, tmp_path, supervisor).run()
            assert observation.ok, observation
            assert observation.values["lag_seconds"] <= service.replication.max_lag  # type: ignore[union-attr]
            probe_for(service, tmp_path, supervisor).export(metrics, observation)
        finally:
            await supervisor.stop()
        assert supervisor.state is ChildState.STOPPED and supervisor.pid is None

    asyncio.run(scenario())
    sample = metrics.registry.get_sample_value
    assert sample("rollbackd_replication_up", {"service": "vbrpg"}) == 1
    assert sample("rollbackd_replication_last_replicated_timestamp_seconds", {"service": "vbrpg"}) > 0


HOLD_THE_LOCK = """
import sys
from pathlib import Path
from rollbackd.state.service_lock import ServiceLock
lock = ServiceLock(Path(sys.argv[1]), "vbrpg", "rollbackd restore", changes_database=True)
lock.acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


def test_no_child_starts_while_another_process_holds_the_service_to_swap_its_database(tmp_path: Path) -> None:
    # A `rollbackd restore` asked the daemon before this one (a restart, or a reload that replaced the supervisor)
    # to pause replication: this supervisor never got that request, only the lock says a swap may be under way.
    service = service_with(tmp_path, 'type = "file"\npath = "../replica"')
    state_dir = StateDir(tmp_path / "state")
    supervisor = LitestreamSupervisor(service, state_dir=state_dir, metrics=Metrics())
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(state_dir.root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b"held\n"

            async def scenario() -> None:
                await supervisor.start()
                try:
                    await eventually(lambda: supervisor.waiting_for is not None, "the supervisor waits for the holder")
                    assert supervisor.waiting_for == f"rollbackd restore (pid {holder.pid})"
                    assert supervisor.state is ChildState.PAUSED and supervisor.pid is None
                    assert "while rollbackd restore" in replication_line(supervisor.describe(), time.time())
                    assert holder.stdin is not None
                    holder.stdin.close()  # the restore is done: it lets go of the lock
                    await eventually(lambda: supervisor.running, "the child starts once the lock is let go")
                    assert supervisor.waiting_for is None
                finally:
                    await supervisor.stop()

            asyncio.run(scenario())
        finally:
            holder.kill()


def test_the_daemons_own_hold_of_the_lock_does_not_keep_its_child_from_starting(tmp_path: Path) -> None:
    # Its own actions pause the child themselves (ReplicationPause): the lock held by this process is no swap to
    # wait out (the daemon's start-up takes it to finish an interrupted restore, then starts the child).
    service = service_with(tmp_path, 'type = "file"\npath = "../replica"')
    state_dir = StateDir(tmp_path / "state")
    supervisor = LitestreamSupervisor(service, state_dir=state_dir, metrics=Metrics())
    lock = ServiceLock(state_dir.root, "vbrpg", "restore", changes_database=True)
    lock.acquire()

    async def scenario() -> None:
        await supervisor.start()
        try:
            await eventually(lambda: supervisor.running, "the child runs")
            assert supervisor.waiting_for is None
        finally:
            await supervisor.stop()

    try:
        asyncio.run(scenario())
    finally:
        lock.release()


def test_s3_replica_through_a_real_server_without_the_ca_bundle(tmp_path: Path, s3: S3Server) -> None:
    service = s3_service(tmp_path, s3.endpoint, s3.bucket("replicas"))
    environ = {**os.environ, **CA_BUNDLE}  # this machine exports it; it breaks Litestream's plain-http client
    supervisor = LitestreamSupervisor(
        service, state_dir=StateDir(tmp_path / "state"), metrics=Metrics(), environ=environ
    )
    litestream = prepare(service, StateDir(tmp_path / "state"), environ)

    async def scenario() -> None:
        await supervisor.start()
        try:
            await eventually(lambda: supervisor.running, "the child runs")
            assert supervisor.pid is not None
            env = child_environ(supervisor.pid)
            assert "AWS_CA_BUNDLE" not in env and env["AWS_ACCESS_KEY_ID"] == KEY
            add_player(service.database, "in-the-bucket")
            await eventually(lambda: replica_holds(litestream, tmp_path / "s.db", "in-the-bucket"), "replicated")
            probe = probe_for(service, tmp_path, supervisor)
            first = await probe.run()
            assert first.ok, first
            assert "snapshot_age_seconds" in first.values
            add_player(service.database, "after-the-full-listing")
            await eventually(lambda: replica_holds(litestream, tmp_path / "s.db", "after-the-full-listing"), "again")
            second = await probe.run()  # level 0 only this time; the snapshot is the one the first run saw
            assert second.ok, second
            assert second.values["snapshot_at"] == first.values["snapshot_at"]
            assert second.values["replicated_at"] >= first.values["replicated_at"]
        finally:
            await supervisor.stop()

    asyncio.run(scenario())
    assert supervisor.last_error is None


def test_wrong_credentials_are_one_clear_error_and_a_backoff(
    tmp_path: Path, s3: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-secret-4711"
    service = s3_service(tmp_path, s3.endpoint, s3.bucket("replicas"), secret=wrong)
    metrics = Metrics()
    supervisor = LitestreamSupervisor(
        service, state_dir=StateDir(tmp_path / "state"), metrics=metrics, backoff=Backoff(initial=0.2, cap=0.5)
    )
    caplog.set_level(logging.DEBUG, logger="rollbackd")

    async def scenario() -> None:
        await supervisor.start()
        try:
            await eventually(
                lambda: supervisor.restarts >= 2 and supervisor.state is ChildState.BACKOFF,
                "stopped for the refused credentials, twice over",
            )
        finally:
            await supervisor.stop()

    asyncio.run(scenario())
    assert supervisor.last_error_reason == "credentials"
    assert str(tmp_path / "s3.env") in (supervisor.last_error or "")
    refused = [r for r in caplog.records if r.levelno == logging.ERROR and "refused the credentials" in r.getMessage()]
    assert len(refused) == 1  # tried three times, said once
    assert wrong not in caplog.text
    assert metrics.registry.get_sample_value(
        "rollbackd_replication_errors_total", {"service": "vbrpg", "reason": "credentials"}
    )


def test_a_child_that_dies_in_a_loop_is_restarted_with_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A real failure of the real binary: an https endpoint keeps the inherited AWS_CA_BUNDLE, with which
    # Litestream's S3 client exits at once ("unable to add custom RootCAs HTTPClient").
    replica = 'type = "s3"\nendpoint = "https://127.0.0.1:9"\nbucket = "b"'
    service = service_with(tmp_path, replica)
    metrics = Metrics()
    supervisor = LitestreamSupervisor(
        service,
        state_dir=StateDir(tmp_path / "state"),
        metrics=metrics,
        backoff=Backoff(initial=0.05, cap=0.4),
        environ={**os.environ, **CA_BUNDLE},
    )

    def exits() -> float:
        value = metrics.registry.get_sample_value(
            "rollbackd_replication_errors_total", {"service": "vbrpg", "reason": "exited"}
        )
        return value or 0.0

    async def scenario() -> None:
        await supervisor.start()
        try:
            await eventually(lambda: exits() >= 4, "four exits")
        finally:
            await supervisor.stop()

    asyncio.run(scenario())
    assert supervisor.restarts >= 3
    assert supervisor.failures >= 3  # in a row, so the delays grew
    assert supervisor.last_error == "litestream exited with code 1"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "exited with code" in r.getMessage()]
    assert len(errors) == 1  # the same error again is not logged again
    assert any("starting it again in" in r.getMessage() for r in caplog.records)


def test_a_rollback_journal_database_is_not_replicated_until_it_is_in_wal(tmp_path: Path) -> None:
    service = service_with(tmp_path, 'type = "file"\npath = "../replica"', journal_mode="delete")
    metrics = Metrics()
    supervisor = LitestreamSupervisor(
        service, state_dir=StateDir(tmp_path / "state"), metrics=metrics, backoff=Backoff(initial=0.2, cap=1.0)
    )
    seen: dict[str, object] = {}

    async def scenario() -> None:
        await supervisor.start()
        try:
            await eventually(lambda: supervisor.state is ChildState.REFUSED, "refused")
            seen["error"] = supervisor.last_error
            observation = await probe_for(service, tmp_path, supervisor).run()
            assert not observation.ok and observation.reason == "refused"
            with closing(sqlite3.connect(service.database)) as connection:
                seen["mode while refused"] = connection.execute("PRAGMA journal_mode").fetchone()[0]
                assert not (tmp_path / "replica").exists()
                # The service's own connection setup switches it (as a restore's service start does): then it runs.
                connection.execute("PRAGMA journal_mode=wal")
            await eventually(lambda: supervisor.running, "replicating once the database is in WAL")
        finally:
            await supervisor.stop()

    asyncio.run(scenario())
    assert "PRAGMA journal_mode=wal" in str(seen["error"])
    assert seen["mode while refused"] == "delete"  # rollbackd left it as it was
    assert metrics.registry.get_sample_value(
        "rollbackd_replication_errors_total", {"service": "vbrpg", "reason": "not_wal"}
    )


def test_an_unreachable_replica_is_reported_by_the_probe(tmp_path: Path) -> None:
    service = s3_service(tmp_path, f"http://127.0.0.1:{free_port()}", "nobody-listens")
    prepare(service, StateDir(tmp_path / "state"))  # the config the child would have written
    probe = probe_for(
        service, tmp_path, LitestreamSupervisor(service, state_dir=StateDir(tmp_path / "s"), metrics=Metrics())
    )
    probe.timeout = 3.0
    observation = asyncio.run(probe.run())
    assert not observation.ok and observation.reason == "unreachable"
    assert "no answer" in observation.detail["error"]
    with pytest.raises(ReplicaUnreachable):
        read_replica(prepare(service, StateDir(tmp_path / "state")), timeout=2.0)


def test_a_child_left_running_by_an_earlier_daemon_is_ended_first(tmp_path: Path) -> None:
    service = service_with(tmp_path, 'type = "file"\npath = "../replica"')
    state_dir = StateDir(tmp_path / "state")
    litestream = prepare(service, state_dir)
    # What a SIGKILLed rollbackd leaves behind outside systemd: its child, still replicating, and its pidfile.
    leftover = subprocess.Popen(  # noqa: S603 - argv list
        litestream.replicate_argv(), env=dict(litestream.env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    supervisor = LitestreamSupervisor(service, state_dir=state_dir, metrics=Metrics())
    supervisor.pidfile.write_text(f"{leftover.pid}\n")

    async def scenario() -> None:
        await supervisor.start()
        try:
            await eventually(lambda: supervisor.running, "the new child runs")
            assert supervisor.pid != leftover.pid
            assert supervisor.pidfile.read_text().strip() == str(supervisor.pid)
        finally:
            await supervisor.stop()

    try:
        asyncio.run(scenario())
        assert leftover.wait(timeout=30) is not None
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()
    assert not supervisor.pidfile.exists()
