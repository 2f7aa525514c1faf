"""Start the vbrpg example service on a free 127.0.0.1 port, talk to it, and stop it: the helpers every
test folder that needs a real target service uses (fixtures in conftest.py wrap them).

Nothing here mocks anything: the service is `vbrpg-example serve` in a child process, in its own session so
that stopping it can take its whole process group, against a real SQLite file.
"""

import contextlib
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# The same entry point as the `vbrpg-example` console script, independent of PATH.
VBRPG_EXAMPLE = (sys.executable, "-m", "vbrpg_example")

# Fixed revision ids of the clean migrations, oldest first, and of the fault scripts.
CLEAN_REVISIONS = ("4e2a9c71b0d3", "7b15d08e3f62", "1c8f4a6e2d95", "e6093b7a4c18")
CLEAN_HEAD = CLEAN_REVISIONS[-1]
FAULT_REVISIONS = {
    "fk-violation": "9c1e4b2a7d30",
    "schema-skew": "5a7d3e9b1f24",
    "data-loss": "8e4b6c2d0a91",
    "drop-index": "2d6f8a0c4e19",
    "bad-downgrade": "6b3f9e1d7c52",
}

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
CLI_TIMEOUT_SECONDS = 120.0


def run_cli(
    *arguments: object, timeout: float = CLI_TIMEOUT_SECONDS, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `vbrpg-example ARGUMENTS...` (each passed through str()) to completion; stdout and stderr are
    captured separately."""
    return run_argv([*VBRPG_EXAMPLE, *arguments], timeout=timeout, cwd=cwd)


def run_argv(
    argv: Sequence[object], *, timeout: float = CLI_TIMEOUT_SECONDS, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (each part passed through str()) to completion, no stdin; stdout and stderr captured."""
    return subprocess.run(
        [str(part) for part in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ExampleService:
    """A running `vbrpg-example serve` child process."""

    process: subprocess.Popen[bytes]
    port: int
    database: Path
    app_dir: Path | None
    log_path: Path
    pidfile: Path | None = None
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout: float = 10.0) -> httpx.Client:
        """Return an httpx client for the service; it is closed when the service stops."""
        client = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._clients.append(client)
        return client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM the process group, SIGKILL it after a while; return the exit status."""
        for client in self._clients:
            client.close()
        return stop_process_group(self.process)


def start_service(
    database: Path,
    app_dir: Path | None,
    log_path: Path,
    *,
    chaos: bool = False,
    pidfile: Path | None = None,
    extra_arguments: tuple[str, ...] = (),
) -> ExampleService:
    """Start the service on a free port and return once its port is bound and /health answered (any status).

    Raise RuntimeError, with the service's log, if it exits or does not come up in time.
    """
    port = free_port()
    arguments = ["serve", "--db", str(database), "--port", str(port), *extra_arguments]
    if app_dir is not None:
        arguments += ["--app-dir", str(app_dir)]
    if chaos:
        arguments.append("--chaos")
    if pidfile is not None:
        arguments += ["--pidfile", str(pidfile)]
    # The service writes to this pipe once uvicorn has bound the port (its --ready-fd hook), so we wait on
    # an event instead of polling the port.
    read_end, write_end = os.pipe()
    log = log_path.open("ab")
    try:
        process = subprocess.Popen(
            [*VBRPG_EXAMPLE, *arguments, "--ready-fd", str(write_end)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_end,),
            start_new_session=True,
        )
    finally:
        os.close(write_end)
        log.close()
    service = ExampleService(process, port, database, app_dir, log_path, pidfile)
    try:
        ready, _, _ = select.select([read_end], [], [], START_TIMEOUT_SECONDS)
        message = os.read(read_end, 64) if ready else b""
    finally:
        os.close(read_end)
    if not message:
        service.stop()
        raise RuntimeError(f"the example service did not come up; its log:\n{service.log()}")
    with httpx.Client(base_url=service.base_url, timeout=10.0) as client:
        client.get("/health")
    return service


@contextlib.contextmanager
def running_service(
    database: Path, app_dir: Path | None, log_path: Path, *, chaos: bool = False, pidfile: Path | None = None
) -> Iterator[ExampleService]:
    """Start the service, yield it, and stop it whatever happens."""
    service = start_service(database, app_dir, log_path, chaos=chaos, pidfile=pidfile)
    try:
        yield service
    finally:
        service.stop()


def stop_process_group(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM `process`'s group (it leads one: start_new_session), wait, then SIGKILL; return its status."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            return process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    return process.wait()


def kill_detached(pidfile: Path) -> None:
    """SIGKILL the process group a detached service's pidfile names, if it is still alive.

    For cleanup after `serve --detach`, whose service is not our child.
    """
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def process_gone(pid: int, timeout: float = 10.0) -> bool:
    """Return whether `pid` has exited (a zombie counts) within `timeout`, waiting on a pidfd."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(descriptor, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(descriptor)


def database_rows(database: Path, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement on a fresh autocommit connection (foreign keys on, as the service has them);
    return its rows."""
    connection = sqlite3.connect(database, timeout=5, isolation_level=None)
    try:
        connection.execute("PRAGMA foreign_keys = ON")
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


def database_revision(database: Path) -> str | None:
    rows = database_rows(database, "SELECT version_num FROM alembic_version")
    return str(rows[0][0]) if rows else None
