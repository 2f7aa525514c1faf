"""The daemon: the one place that wires probes, metrics, the observation log and the parts built on them.

Shaped like uvicorn's Server: ``serve()`` installs signal handlers that only set a flag, then ``startup()`` (state
dir, /metrics listener, one task per probe per service, the registered long-running tasks), ``main_loop()`` (a 1 s
tick that measures event-loop lag; the systemd watchdog ping belongs there) and ``shutdown()`` (cancel the tasks,
wait for them at most ``daemon.shutdown_timeout``). A second SIGINT skips the wait.

Parts built later plug in without the probes knowing them: ``observation_listeners`` are called with every
Observation (the policy's signal windows), ``add_task_factory()`` adds a supervised long-running task (backup
schedules, the deploy watcher), ``tick_listeners`` run on each tick (watchdog ping).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from wsgiref.simple_server import WSGIServer

import httpx
from prometheus_client import start_http_server

from rollbackd.config import Config, ServiceConfig
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation, ObservationLog
from rollbackd.probes import Probe, ProbeContext, build_probes, observe
from rollbackd.state_dir import StateDir

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
TASK_RESTART_DELAY = 5.0

ObservationListener = Callable[[Observation], Awaitable[None] | None]
TickListener = Callable[[], Awaitable[None] | None]
TaskFactory = Callable[[], Coroutine[Any, Any, None]]
ProbeBuilder = Callable[[ServiceConfig, ProbeContext], list[Probe]]


class DaemonStartupError(Exception):
    """Something the daemon needs could not be set up (state dir, metrics port); nothing was started."""


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        observations: ObservationLog | None = None,
        clock: Callable[[], float] = time.time,
        probe_builder: ProbeBuilder = build_probes,
        task_restart_delay: float = TASK_RESTART_DELAY,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.observations = observations or ObservationLog()
        self.clock = clock
        self.state_dir = StateDir(config.daemon.state_dir)
        self.observation_listeners: list[ObservationListener] = []
        self.tick_listeners: list[TickListener] = []
        self.probes: dict[str, list[Probe]] = {}
        self.metrics_server_address: tuple[str, int] | None = None
        self.should_exit = False
        self.force_exit = False
        self._probe_builder = probe_builder
        self.task_restart_delay = task_restart_delay
        self._task_factories: list[tuple[str, TaskFactory]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._exit_event: asyncio.Event | None = None
        self._metrics_server: tuple[WSGIServer, threading.Thread] | None = None
        self._http: httpx.AsyncClient | None = None
        self._stopping = threading.Event()

    def add_task_factory(self, name: str, factory: TaskFactory) -> None:
        """Run ``factory()`` as a long-running task from startup to shutdown; restart it if it crashes."""
        self._task_factories.append((name, factory))

    # Lifecycle

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT (or ``request_exit()``). Raise DaemonStartupError if startup fails."""
        self._exit_event = asyncio.Event()
        installed = self._install_signal_handlers()
        try:
            await self.startup()
            await self.main_loop()
        finally:
            await self.shutdown()
            loop = asyncio.get_running_loop()
            for signum in installed:
                loop.remove_signal_handler(signum)
        log.info("stopped")

    def _install_signal_handlers(self) -> list[int]:
        if threading.current_thread() is not threading.main_thread():
            return []  # only the main thread may handle signals (a program embedding the daemon handles its own)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.handle_exit, signum)
        return [signal.SIGINT, signal.SIGTERM]

    def handle_exit(self, signum: int) -> None:
        """Signal handler: set a flag, nothing else. A second SIGINT means "do not wait for tasks"."""
        if self.should_exit and signum == signal.SIGINT:
            self.force_exit = True
        log.info("received %s, shutting down", signal.Signals(signum).name)
        self.request_exit()

    def request_exit(self) -> None:
        self.should_exit = True
        if self._exit_event is not None:
            self._exit_event.set()

    async def startup(self) -> None:
        try:
            self.state_dir.ensure()
        except OSError as error:
            raise DaemonStartupError(f"cannot create the state dir {self.state_dir.root}: {error}") from error
        self._start_metrics_server()
        self._http = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        context = ProbeContext(http=self._http, state_dir=self.state_dir, clock=self.clock, stopping=self._stopping)
        for service in self.config.service:
            try:
                probes = self._probe_builder(service, context)
            except OSError as error:
                raise DaemonStartupError(f"{service.name}: cannot set up probes: {error}") from error
            self.probes[service.name] = probes
            for probe in probes:
                self._spawn(f"probe {service.name}/{probe.name}", self._run_probe(probe))
            log.info("%s: probing %s", service.name, ", ".join(probe.name for probe in probes) or "nothing")
        for name, factory in self._task_factories:
            self._spawn(name, self._supervise(name, factory))
        log.info("started: %d service(s), %d task(s)", len(self.config.service), len(self._tasks))

    async def main_loop(self) -> None:
        if self._exit_event is None:
            self._exit_event = asyncio.Event()
        exit_event = self._exit_event
        if self.should_exit:
            exit_event.set()
        loop = asyncio.get_running_loop()
        expected = loop.time() + TICK_SECONDS
        while not exit_event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, expected - loop.time())):
                    await exit_event.wait()
            if exit_event.is_set():
                break
            now = loop.time()
            self.metrics.loop_lag_seconds.set(max(0.0, now - expected))
            await self.on_tick()
            expected = max(expected + TICK_SECONDS, now)

    async def on_tick(self) -> None:
        for listener in list(self.tick_listeners):
            await _call_safely("tick listener", listener)

    async def shutdown(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            timeout = 0.0 if self.force_exit else self.config.daemon.shutdown_timeout
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                log.warning("task %s did not stop within %.0fs", task.get_name(), timeout)
        self._tasks.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._metrics_server is not None:
            server, thread = self._metrics_server
            await asyncio.to_thread(server.shutdown)
            server.server_close()
            thread.join(timeout=5)
            self._metrics_server = None

    # Metrics listener

    def _start_metrics_server(self) -> None:
        address = self.config.daemon.metrics_address
        if address is None:
            log.info("metrics listener disabled (daemon.metrics_listen is empty)")
            return
        host, port = address
        try:
            server, thread = start_http_server(port, addr=host, registry=self.metrics.registry)
        except OSError as error:
            raise DaemonStartupError(f"cannot serve metrics on {host}:{port}: {error.strerror or error}") from error
        self._metrics_server = (server, thread)
        self.metrics_server_address = (host, server.server_port)
        log.info("metrics on http://%s:%d/metrics", host if ":" not in host else f"[{host}]", server.server_port)

    # Tasks

    def _spawn(self, name: str, coroutine: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coroutine, name=name))

    async def _run_probe(self, probe: Probe) -> None:
        """Run ``probe`` every ``interval`` seconds from the start of one run to the next; a slow run delays the
        next one rather than piling runs up."""
        loop = asyncio.get_running_loop()
        next_run = loop.time()
        while not self._stopping.is_set():  # besides cancellation: a swallowed cancel must not keep it running
            observation = await observe(probe, self.clock)
            try:
                await self.record(probe, observation)
            except Exception:
                log.exception("recording an observation of %s/%s failed", probe.service, probe.name)
            next_run = max(next_run + probe.interval, loop.time())
            await asyncio.sleep(next_run - loop.time())

    async def record(self, probe: Probe, observation: Observation) -> None:
        """Keep ``observation`` in the log, export it as metrics, log a change of state, tell the listeners."""
        previous = self.observations.latest(observation.service, observation.probe)
        self.observations.append(observation)
        labels = {"service": observation.service, "probe": observation.probe}
        metrics = self.metrics
        metrics.probe_success.labels(**labels).set(1 if observation.ok else 0)
        metrics.probe_duration_seconds.labels(**labels).observe(observation.duration)
        metrics.probe_last_run_timestamp_seconds.labels(**labels).set(observation.started_at + observation.duration)
        if not observation.ok:
            metrics.probe_failures.labels(**labels, reason=observation.reason).inc()
        try:
            probe.export(metrics, observation)
        except Exception:
            log.exception("exporting metrics of %s/%s failed", observation.service, observation.probe)
        if previous is None or (previous.ok, previous.reason) != (observation.ok, observation.reason):
            _log_change(observation, previous)
        for listener in list(self.observation_listeners):
            await _call_safely("observation listener", listener, observation)

    async def _supervise(self, name: str, factory: TaskFactory) -> None:
        while not self._stopping.is_set():
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task %s crashed; restarting it in %.0fs", name, self.task_restart_delay)
                await asyncio.sleep(self.task_restart_delay)
            else:
                log.info("task %s finished", name)
                return


async def _call_safely(what: str, function: Callable[..., Awaitable[None] | None], *args: Any) -> None:
    """Call a plug-in's callback; a failure is logged, never allowed to stop the caller."""
    try:
        result = function(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("%s %r failed", what, function)


def _log_change(observation: Observation, previous: Observation | None) -> None:
    where = f"{observation.service}/{observation.probe}"
    if observation.ok:
        if previous is None:
            log.info("%s: ok", where)
        else:
            log.info("%s: ok again (was %s)", where, previous.reason)
        return
    error = observation.detail.get("error")
    log.warning("%s: failing: %s%s", where, observation.reason, f" ({error})" if error else "")
