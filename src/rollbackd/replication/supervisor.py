"""The `litestream replicate` child of one service, kept running; or the operator's own Litestream unit.

One child per service, not one per daemon: a restore pauses exactly the service whose file is swapped while the
others go on replicating, one service's refused credentials or rollback-journal database stops only its own
replication, and a reload that removes a service stops only its child. (Litestream 0.5 takes one replica per
database, so a per-daemon child would gain nothing but a shared fate.)

The child is restarted with capped exponential backoff when it exits; a run that lasted ``stable_after`` resets
it. Its output (Litestream logs to stdout and stderr) goes into rollbackd's log line by line with the service name;
a line repeating the one before it within ``REPEAT_WINDOW`` is logged at debug only, so an S3 endpoint that is
down does not flood the journal. Credentials refused by the replica are one clear error: the child is stopped
(Litestream itself would retry every sync interval) and started again only after the backoff. No secret value
reaches a log line. Nothing here blocks the event loop: the probes go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from rollbackd.config.model import ServiceConfig
from rollbackd.host.atomic_files import write_bytes_atomic
from rollbackd.host.commands import run_command
from rollbackd.metrics import Metrics
from rollbackd.replication.litestream import (
    CredentialsError,
    Litestream,
    LitestreamMissing,
    NotWalMode,
    check_wal_mode,
    prepare,
    redact,
)

# Re-exported: they were defined here before pause.py, and other code may still import them from here.
from rollbackd.replication.pause import ReplicationControlError as ReplicationControlError
from rollbackd.replication.pause import ReplicationPause as ReplicationPause
from rollbackd.state.service_lock import LockHolder, ServiceLock
from rollbackd.state.state_dir import StateDir

log = logging.getLogger(__name__)

PIDFILE = "litestream.pid"  # in the service's state dir, while a child runs
STOP_TIMEOUT = 10.0  # SIGTERM, then this long for Litestream's last sync, then SIGKILL
CONTROL_TIMEOUT = 60.0  # pause()/resume() from a worker thread wait at most this long
SYSTEMCTL_TIMEOUT = 90.0
REPEAT_WINDOW = 60.0
# How often a child kept from starting by another process's swap looks at the service lock again.
SWAP_HOLDER_POLL = 1.0

# Litestream's words for a replica refusing who we are (S3 SDK errors), and for one that cannot be reached.
CREDENTIAL_ERRORS = (
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "AccessDenied",
    "StatusCode: 403",
    "NoCredentialProviders",
    "failed to retrieve credentials",
    "InvalidClientTokenId",
)
UNREACHABLE_ERRORS = ("connection refused", "no such host", "i/o timeout", "dial tcp", "connection reset")
_TIME_PREFIX = re.compile(r"^time=\S+\s+")


class ChildState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"  # it exited or was stopped for an error; restarted after the delay
    REFUSED = "refused"  # cannot start at all (no binary, rollback-journal database, bad credentials file)
    PAUSED = "paused"  # around a restore's swap
    STOPPED = "stopped"


@dataclass(frozen=True)
class Backoff:
    initial: float = 1.0
    cap: float = 300.0
    stable_after: float = 60.0  # a child that ran this long starts the next failure from ``initial`` again

    def delay(self, failures: int) -> float:
        """The wait after the ``failures``-th failure in a row (1, 2, 4, ... up to ``cap`` seconds)."""
        return float(min(self.cap, self.initial * 2 ** max(0, failures - 1)))


def classify(line: str) -> str | None:
    """The error reason of one line of Litestream's output, or None when it is not an error."""
    if "level=ERROR" not in line and not line.startswith("Error:"):
        return None
    if any(marker in line for marker in CREDENTIAL_ERRORS):
        return "credentials"
    lowered = line.lower()
    if any(marker in lowered for marker in UNREACHABLE_ERRORS):
        return "unreachable"
    return "sync"


class LitestreamSupervisor:
    """Runs ``litestream replicate`` for one service (``managed = true``) from ``start()`` to ``stop()``."""

    def __init__(
        self,
        service: ServiceConfig,
        *,
        state_dir: StateDir,
        metrics: Metrics,
        backoff: Backoff | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.name = service.name
        self.state_dir = state_dir
        self.metrics = metrics
        self.backoff = backoff or Backoff()
        self.environ = environ
        self.clock = clock
        self.state = ChildState.STOPPED
        self.pid: int | None = None
        self.restarts = 0
        self.failures = 0  # in a row
        self.last_error: str | None = None
        self.last_error_reason: str | None = None
        self.last_error_at: float | None = None
        self.running_since: float | None = None
        self.retry_at: float | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()  # stop, pause or resume asked for: the run loop looks again
        self._attempted = asyncio.Event()  # the run loop started the child or failed to
        self._spawning = asyncio.Lock()
        self._paused = False
        self._pauses = 0  # pauses held (pause_async minus resume_async); the child runs only at zero
        self._stopping = False
        self._stop_reason: str | None = None  # why the supervisor itself ended the current child
        self._last_line: tuple[str, float] | None = None
        self.waiting_for: str | None = None  # another process's swap the child waits out ("rollbackd restore ...")

    # Lifecycle (on the event loop)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._task = self._loop.create_task(self._run(), name=f"litestream {self.name}")

    async def stop(self) -> None:
        """End the child and the supervision (daemon stop, or the service left the config)."""
        self._stopping = True
        self._changed.set()
        async with self._spawning:  # a child being spawned right now is ended too, not left behind
            await self._end_child("stopped")
        if self._task is not None:
            _, pending = await asyncio.wait({self._task}, timeout=STOP_TIMEOUT)
            for task in pending:
                task.cancel()
            self._task = None
        self.state = ChildState.STOPPED

    async def pause_async(self) -> None:
        """Stop the child and keep it stopped until ``resume``; returns once it has exited.

        Pauses are counted: a restore the daemon finishes for a `rollbackd restore` that died (its own pause)
        inside the pause that restore's connection held must not start the child before both are over."""
        self._pauses += 1
        self._paused = True
        self._changed.set()
        async with self._spawning:
            await self._end_child("paused")
        self.state = ChildState.PAUSED
        log.info("%s: replication paused", self.name, extra={"service": self.name})

    async def resume_async(self) -> None:
        """Let the child start again (a new lineage from whatever file is in place now); returns once it was
        started, or failed to start (then the reason is in ``last_error``)."""
        if not self._paused:
            return
        self._pauses = max(0, self._pauses - 1)
        if self._pauses:
            return  # another pause is still held
        self._attempted.clear()
        self._paused = False
        self.failures = 0
        self._changed.set()
        log.info("%s: replication resumed", self.name, extra={"service": self.name})
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._attempted.wait(), CONTROL_TIMEOUT)

    # From a worker thread (a restore's swap runs in one)

    def pause(self) -> None:
        self._call_from_thread(self.pause_async)

    def resume(self) -> None:
        self._call_from_thread(self.resume_async)

    def _call_from_thread(self, method: Callable[[], Any]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # never started: nothing runs that could touch the file
        if _on_loop_thread(loop):
            raise RuntimeError("pause()/resume() block: call them from a worker thread, or await *_async()")
        asyncio.run_coroutine_threadsafe(method(), loop).result(timeout=CONTROL_TIMEOUT + STOP_TIMEOUT)

    # The run loop

    async def _run(self) -> None:
        while not self._stopping:
            if self._paused:
                await self._wait_for_change(None)
                continue
            holder = await asyncio.to_thread(self._swap_holder)
            if holder is not None:
                self._wait_out(holder)
                await self._wait_for_change(SWAP_HOLDER_POLL)
                continue
            if self.waiting_for is not None:
                log.info("%s: %s let go of the service; replicating", self.name, self.waiting_for, extra=self._extra)
                self.waiting_for = None
            if self.state is not ChildState.REFUSED:  # a refusal looked at again stays one until it starts
                self.state = ChildState.STARTING
            try:
                litestream = await asyncio.to_thread(self._prepare)
            except (LitestreamMissing, CredentialsError, NotWalMode, OSError) as error:
                # Looked at again with the same backoff: a database a restore just put back may be in WAL again
                # as soon as the service opens it; the same refusal is logged once.
                self._error(_refusal_reason(error), str(error))
                self.state = ChildState.REFUSED
                self._attempted.set()
                self.failures += 1
                self.retry_at = self.clock() + self.backoff.delay(self.failures)
                await self._wait_for_change(self.backoff.delay(self.failures))
                self.retry_at = None
                continue
            started = time.monotonic()
            outcome = await self._run_child(litestream)
            if outcome is None or self._stopping or self._paused:
                continue
            if time.monotonic() - started >= self.backoff.stable_after:
                self.failures = 0
            self.failures += 1
            delay = self.backoff.delay(self.failures)
            self.state = ChildState.BACKOFF
            self.retry_at = self.clock() + delay
            log.warning(
                "%s: litestream %s; starting it again in %.0fs",
                self.name,
                outcome,
                delay,
                extra={"service": self.name},
            )
            await self._wait_for_change(delay)
            self.retry_at = None
            self.restarts += 1

    def _swap_holder(self) -> LockHolder | None:
        """Another process holding the service's lock to change the database, or None.

        A `rollbackd restore` asks the daemon to pause the child over the status socket, and the pause lasts as
        long as that connection. A daemon restarted meanwhile, or a reload that replaced this supervisor, never
        got that request: the lock, which the restore holds from its first step to its last, is what says a swap
        may be under way. The daemon's own actions hold it too, from this process, and pause the child
        themselves."""
        try:
            holder = ServiceLock(self.state_dir.root, self.name, "").inspect()
        except OSError:
            return None
        if holder is None or not holder.held or not holder.changes_database or holder.pid == os.getpid():
            return None
        return holder

    def _wait_out(self, holder: LockHolder) -> None:
        waiting_for = f"{holder.purpose or 'another process'} (pid {holder.pid})"
        if waiting_for != self.waiting_for:
            log.warning(
                "%s: not replicating while %s changes the database; starting once it lets go",
                self.name,
                waiting_for,
                extra=self._extra,
            )
        self.waiting_for = waiting_for
        self.state = ChildState.PAUSED

    def _prepare(self) -> Litestream:
        check_wal_mode(self.service.database)
        litestream = prepare(self.service, self.state_dir, self.environ)
        self._end_leftover(litestream)
        return litestream

    @property
    def pidfile(self) -> Path:
        return self.state_dir.service_dir(self.name) / PIDFILE

    def _end_leftover(self, litestream: Litestream) -> None:
        """End a child an earlier rollbackd left running (it was killed with SIGKILL outside systemd, whose
        control group would have ended it): two Litestreams must never replicate one database."""
        try:
            pid = int(self.pidfile.read_text().strip())
            command = psutil.Process(pid).cmdline()
        except (OSError, ValueError, psutil.Error):
            self.pidfile.unlink(missing_ok=True)
            return
        if not command or Path(command[0]).name != "litestream" or str(litestream.config) not in command:
            self.pidfile.unlink(missing_ok=True)
            return  # the pid was reused by another program
        log.warning(
            "%s: ending litestream pid %d, left running by an earlier rollbackd", self.name, pid, extra=self._extra
        )
        with contextlib.suppress(psutil.Error):
            leftover = psutil.Process(pid)
            leftover.terminate()
            try:
                leftover.wait(STOP_TIMEOUT)
            except psutil.TimeoutExpired:
                leftover.kill()
                leftover.wait(STOP_TIMEOUT)
        self.pidfile.unlink(missing_ok=True)

    async def _run_child(self, litestream: Litestream) -> str | None:
        """Run the child until it exits; return what happened ("exited with code 1", "was stopped: the replica
        refused the credentials"), or None when it never started because of a pause or stop."""
        async with self._spawning:
            if self._paused or self._stopping:
                return None
            self._stop_reason = None
            try:
                process = await asyncio.create_subprocess_exec(
                    *litestream.replicate_argv(),
                    env=dict(litestream.env),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as error:
                self._error("exited", f"cannot start {litestream.binary}: {error.strerror or error}")
                self._attempted.set()
                return "could not start"
            self._process, self.pid = process, process.pid
            await asyncio.to_thread(write_bytes_atomic, self.pidfile, f"{process.pid}\n".encode())
            self.state, self.running_since = ChildState.RUNNING, self.clock()
            log.info("%s: litestream replicating (pid %d)", self.name, process.pid, extra={"service": self.name})
            self._attempted.set()
        try:
            await self._read_output(process, litestream.secrets)
            code = await process.wait()
        finally:
            self._process, self.pid, self.running_since = None, None, None
            self.pidfile.unlink(missing_ok=True)
        stop_reason = self._why_ended()
        if stop_reason in ("paused", "stopped"):
            return None
        if stop_reason is not None:
            return f"was stopped: {stop_reason}"
        self._error("exited", f"litestream exited with code {code}")
        return f"exited with code {code}"

    def _why_ended(self) -> str | None:
        """Why the supervisor ended the child it ran (None: the child exited by itself)."""
        return self._stop_reason

    async def _read_output(self, process: asyncio.subprocess.Process, secrets: tuple[str, ...]) -> None:
        assert process.stdout is not None  # noqa: S101 - created with stdout=PIPE
        while True:
            raw = await process.stdout.readline()
            if not raw:
                return
            line = redact(raw.decode("utf-8", errors="replace").rstrip(), secrets)
            reason = classify(line)
            if reason is not None:
                self.metrics.replication_errors.labels(service=self.name, reason=reason).inc()
            if reason == "credentials" and self._stop_reason is None:
                self._error(
                    "credentials",
                    "the replica refused the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from "
                    f"{self._credentials_source()}): {_message_of(line)}",
                )
                self._stop_reason = "the replica refused the credentials"
                self._terminate(process)
                continue
            self._log_child_line(line, reason)

    def _log_child_line(self, line: str, reason: str | None) -> None:
        key = _TIME_PREFIX.sub("", line)
        now = time.monotonic()
        repeated = (
            self._last_line is not None and self._last_line[0] == key and now - self._last_line[1] < REPEAT_WINDOW
        )
        if not repeated:
            self._last_line = (key, now)
        level = logging.DEBUG if repeated else (logging.WARNING if reason else logging.INFO)
        log.log(level, "%s: litestream: %s", self.name, key, extra={"service": self.name})

    def _credentials_source(self) -> str:
        replication = self.service.replication
        if replication is not None and replication.credentials_file is not None:
            return str(replication.credentials_file)
        return "the daemon's environment"

    def _terminate(self, process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()

    async def _end_child(self, why: str) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        self._stop_reason = why
        self._terminate(process)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("%s: litestream did not stop in %.0fs; killing it", self.name, STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def _wait_for_change(self, timeout: float | None) -> None:
        self._changed.clear()
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def _error(self, reason: str, message: str) -> None:
        """One log line per distinct error: the same refusal every backoff round is not news."""
        if message != self.last_error:
            log.error("%s: replication: %s", self.name, message, extra={"service": self.name})
        if reason != "credentials":  # those were counted from the child's own line
            self.metrics.replication_errors.labels(service=self.name, reason=reason).inc()
        self.last_error, self.last_error_reason, self.last_error_at = message, reason, self.clock()

    def describe(self) -> dict[str, Any]:
        """This service's replication in `rollbackd status`."""
        return {
            "managed": True,
            "state": self.state.value,
            "pid": self.pid,
            "running_since": self.running_since,
            "restarts": self.restarts,
            "retry_at": self.retry_at,
            "last_error": self.last_error,
            "last_error_reason": self.last_error_reason,
            "last_error_at": self.last_error_at,
            "waiting_for": self.waiting_for,
        }

    @property
    def running(self) -> bool:
        return self.state is ChildState.RUNNING

    @property
    def _extra(self) -> dict[str, str]:
        return {"service": self.name}


class UnitReplication:
    """``managed = false``: the operator's Litestream runs as a systemd unit; a restore stops and starts it the
    way it stops and starts the service (argv lists, a timeout)."""

    def __init__(
        self, service: ServiceConfig, *, timeout: float = SYSTEMCTL_TIMEOUT, systemctl: str = "systemctl"
    ) -> None:
        replication = service.replication
        if replication is None or replication.managed:
            raise ValueError(f"{service.name}: not an operator-run Litestream")
        self.name = service.name
        self.unit = replication.unit
        self.timeout = timeout
        self.systemctl = systemctl
        self.last_error: str | None = None
        self.state = ChildState.RUNNING

    async def start(self) -> None:
        """Nothing to start: the unit is the operator's."""

    async def stop(self) -> None:
        """Nothing to stop: the unit outlives rollbackd."""

    def pause(self) -> None:
        self._systemctl("stop")
        self.state = ChildState.PAUSED

    def resume(self) -> None:
        self._systemctl("start")
        self.state = ChildState.RUNNING

    def _systemctl(self, verb: str) -> None:
        result = run_command([self.systemctl, verb, self.unit], timeout=self.timeout)
        if not result.ok:
            self.last_error = result.summary()
            raise ReplicationControlError(f"{self.name}: cannot {verb} {self.unit}: {result.summary()}")
        log.info("%s: systemctl %s %s", self.name, verb, self.unit, extra={"service": self.name})

    def describe(self) -> dict[str, Any]:
        return {"managed": False, "unit": self.unit, "state": self.state.value, "last_error": self.last_error}

    @property
    def running(self) -> bool:
        return self.state is ChildState.RUNNING


Replication = LitestreamSupervisor | UnitReplication


def replication_for(service: ServiceConfig, *, state_dir: StateDir, metrics: Metrics) -> Replication | None:
    """The replication of ``service``: a supervised child, the operator's unit, or None when it has none."""
    if service.replication is None:
        return None
    if service.replication.managed:
        return LitestreamSupervisor(service, state_dir=state_dir, metrics=metrics)
    return UnitReplication(service)


def _refusal_reason(error: Exception) -> str:
    if isinstance(error, LitestreamMissing):
        return "missing_binary"
    if isinstance(error, NotWalMode):
        return "not_wal"
    if isinstance(error, CredentialsError):
        return "credentials_file"
    return "config"


def _message_of(line: str) -> str:
    """The useful part of a Litestream log line: the S3 API's error ("SignatureDoesNotMatch: ..."), without the
    request ids that differ every time (so a retry that fails the same way is not logged again), else its
    error="..." text."""
    api = re.search(r"api error ([^\"]+)", line)
    if api:
        return api.group(1).strip()
    match = re.search(r'error="([^"]*)"', line)
    return match.group(1) if match else _TIME_PREFIX.sub("", line)


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
