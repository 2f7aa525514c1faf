"""The service as a process: start it detached, find it from its pidfile, stop it, kill it.

This is the "command" kind of service control: what systemd or docker compose would do, done with a
pidfile. A pid is only signalled if /proc says it is a live `vbrpg-example serve` process, so a stale
pidfile whose pid was reused by another program is never acted on. Waiting for a process to end uses a
pidfd (the kernel says when it exits, zombie or not) instead of polling.
"""

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from vbrpg_example.errors import NotRunning, ServiceFailed
from vbrpg_example.pidfile import read_pidfile, remove_pidfile

# What a serving process writes to its --ready-fd once its port is bound.
READY_MESSAGE = b"ready\n"
# The serving process's pid on every health answer, so `serve --detach` can tell that its own child
# answered, not some other process already bound to the port.
PID_HEADER = "X-Vbrpg-Pid"
_LOG_TAIL_LINES = 30


def process_state(pid: int) -> str | None:
    """Return the state letter from /proc/PID/stat (R, S, Z, ...), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name in parentheses may hold spaces; the state follows the last ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def is_alive(pid: int) -> bool:
    return process_state(pid) not in (None, "Z", "X")


def is_service_process(pid: int) -> bool:
    """Return whether `pid` is a live `vbrpg-example serve` process."""
    if not is_alive(pid):
        return False
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    names = b" ".join(arguments)
    return (b"vbrpg_example" in names or b"vbrpg-example" in names) and b"serve" in arguments


def running_service(pidfile: Path) -> int | None:
    """Return the pid of the live service named by `pidfile`, or None."""
    pid = read_pidfile(pidfile)
    return pid if pid is not None and is_service_process(pid) else None


def wait_for_exit(pid: int, timeout_seconds: float) -> bool:
    """Wait until `pid` has exited (a zombie counts as exited). Return False on timeout."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(descriptor, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout_seconds) * 1000))
    finally:
        os.close(descriptor)


def stop_service(pidfile: Path, timeout_seconds: float) -> str:
    """SIGTERM the service, SIGKILL it after `timeout_seconds`; return what happened, in words.

    A missing service is not an error: stopping is idempotent. Raise ServiceFailed if it survives SIGKILL.
    """
    pid = read_pidfile(pidfile)
    if pid is None:
        return f"not running (no pid in {pidfile})"
    if not is_service_process(pid):
        pidfile.unlink(missing_ok=True)
        return f"not running (pid {pid} from {pidfile} is gone; removed the stale pidfile)"
    os.kill(pid, signal.SIGTERM)
    if wait_for_exit(pid, timeout_seconds):
        remove_pidfile(pidfile, pid)
        return f"stopped pid {pid}"
    _kill(pid)
    if not wait_for_exit(pid, 5.0):
        raise ServiceFailed(f"pid {pid} survived SIGKILL")
    remove_pidfile(pidfile, pid)
    return f"killed pid {pid}: it did not stop within {timeout_seconds:g} s of SIGTERM"


def kill_service(pidfile: Path) -> int:
    """SIGKILL the service, as a crash would, and leave its pidfile behind. Return the pid.

    Raise NotRunning if the pidfile names no live service.
    """
    pid = running_service(pidfile)
    if pid is None:
        raise NotRunning(f"no running vbrpg-example service in {pidfile}")
    _kill(pid)
    if not wait_for_exit(pid, 5.0):
        raise ServiceFailed(f"pid {pid} survived SIGKILL")
    return pid


def start_detached(
    serve_arguments: Sequence[str],
    pidfile: Path,
    log_file: Path,
    health_url: str,
    start_timeout_seconds: float,
) -> int:
    """Start `vbrpg-example serve SERVE_ARGUMENTS` in a new session with output to `log_file`; return its pid
    once it has bound its port and answered `health_url` (any status: a service with a broken database must
    still start, to say so). Raise ServiceFailed, with the log's tail, if it dies or does not come up.
    """
    existing = running_service(pidfile)
    if existing is not None:
        raise ServiceFailed(f"already running as pid {existing} (pidfile {pidfile})")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    argv = [sys.executable, "-m", "vbrpg_example", "serve", *serve_arguments, "--ready-fd", str(write_end)]
    try:
        with log_file.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(write_end,),
            )
    finally:
        os.close(write_end)
    try:
        ready = _wait_until_ready(read_end, start_timeout_seconds)
    finally:
        os.close(read_end)
    if ready is None:
        _kill(process.pid)
        process.wait()
        raise ServiceFailed(f"not ready after {start_timeout_seconds:g} s; log tail:\n{_tail(log_file)}")
    if not ready:
        returncode = process.wait()
        raise ServiceFailed(f"the service exited ({returncode}) before it was ready; log tail:\n{_tail(log_file)}")
    try:
        _confirm_health(health_url, process.pid, log_file)
    except ServiceFailed:
        _kill(process.pid)
        process.wait()
        raise
    return process.pid


def _wait_until_ready(descriptor: int, timeout_seconds: float) -> bool | None:
    """Return True on the ready message, False if the child closed the pipe without it, None on timeout."""
    deadline = time.monotonic() + timeout_seconds
    received = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([descriptor], [], [], remaining)
        if not readable:
            return None
        chunk = os.read(descriptor, 64)
        if not chunk:
            return False
        received += chunk
        if received.startswith(READY_MESSAGE):
            return True


def _confirm_health(health_url: str, pid: int, log_file: Path) -> None:
    try:
        response = httpx.get(health_url, timeout=10.0)
    except httpx.HTTPError as error:
        raise ServiceFailed(f"{health_url} did not answer: {error}; log tail:\n{_tail(log_file)}") from error
    if response.headers.get(PID_HEADER) != str(pid):
        raise ServiceFailed(f"{health_url} was answered by another process, not pid {pid}")


def _kill(pid: int) -> None:
    """SIGKILL `pid`, and its whole process group when it leads one (a detached service does)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").rstrip().splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
