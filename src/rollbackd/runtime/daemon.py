"""The daemon: the one place that wires the process together.

Shaped like uvicorn's Server: ``serve()`` installs signal handlers that only set flags, then ``startup()`` (state
dir and state DB, /metrics listener, per service: probes, the service runtime with its policy, backups and file
watch; the status socket; READY=1 once every probe's first run has begun), ``main_loop()`` (a 1 s tick: loop lag,
the systemd watchdog ping, the status line, starting a requested reload) and ``shutdown()`` (STOPPING=1, probes
stopped, running recoveries given ``daemon.shutdown_timeout`` to reach their end, a backup still copying after
that long abandoned at its next step, then everything else cancelled).
A second SIGINT skips the wait. SIGHUP reloads the config, in a task beside the tick (a reload may wait for a
recovery or the service lock; the watchdog pings go on); an invalid config is logged and the old one keeps running.

Parts plug in without knowing each other: ``observation_listeners`` get every Observation, ``add_task_factory()``
adds a supervised long-running task, ``tick_listeners`` run on each tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from rollbackd import __version__
from rollbackd.backup.restore_journal import pending_summary
from rollbackd.config.child_load import load_config_in_child
from rollbackd.config.model import Config, ConfigError, ServiceConfig
from rollbackd.config.preflight import preflight_problems
from rollbackd.config.secrets import secrets_in
from rollbackd.host.http_client import HttpClient
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation, ObservationLog
from rollbackd.policy.rules import effective_rules
from rollbackd.probes import ALIGNED_PROBES, Probe, ProbeContext, build_probes, observe
from rollbackd.probes.lock_rounds import LockRounds
from rollbackd.probes.proc_locks import SharedProcLocks
from rollbackd.replication.supervisor import LitestreamSupervisor, Replication, replication_for
from rollbackd.runtime.alerts import WebhookAlerts
from rollbackd.runtime.external_reads import ExternalReads
from rollbackd.runtime.replication_hold import PAUSE_REQUEST, Holdable, ReplicationHolds
from rollbackd.runtime.self_load import SelfLoad
from rollbackd.runtime.service_runtime import LOOKBACK_MARGIN, ServiceRuntime
from rollbackd.runtime.status_socket import StatusServer
from rollbackd.runtime.systemd import Notifier, configure_logging
from rollbackd.state.history import History
from rollbackd.state.state_dir import StateDir
from rollbackd.target.watch import SharedObserver
from rollbackd.units import humanize_age

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
TASK_RESTART_DELAY = 5.0
FIRST_ROUND_TIMEOUT = 60.0  # READY=1 at the latest this long after start, even if a probe never reported
MIN_RETENTION = 300.0  # seconds of observations kept at least (status, debugging)
GRID_EPSILON = 1e-6  # in steps: on_grid(k * step + step) is (k + 1) * step despite float rounding, up to 1e9 steps

ObservationListener = Callable[[Observation], Awaitable[None] | None]
TickListener = Callable[[], Awaitable[None] | None]
TaskFactory = Callable[[], Coroutine[Any, Any, None]]
ProbeBuilder = Callable[[ServiceConfig, ProbeContext], list[Probe]]


def observation_retention(config: Config) -> tuple[int, float]:
    """How many observations per probe, and how old, the policy can ever look at: the longest rule duration plus
    a margin. Keeping an hour of them at 1 s intervals cost ~30 MB of memory for nothing."""
    longest = max((rule.for_ for service in config.service for rule in effective_rules(service)), default=0.0)
    age = max(longest + LOOKBACK_MARGIN, MIN_RETENTION)
    fastest = min(
        (
            every
            for service in config.service
            for every in (
                service.probes.health.every,
                service.probes.latency.every,
                service.probes.sqlite_lock.every,
                service.probes.integrity.quick_every,
                service.probes.schema_.every,
                service.probes.rows.every,
                service.probes.process.every,
            )
        ),
        default=1.0,
    )
    return int(age / fastest) + 10, age


class DaemonStartupError(Exception):
    """Something the daemon needs could not be set up (state dir, state DB, metrics port); nothing was started."""


@dataclass
class _ServiceSlot:
    """What runs for one service, so a reload can stop exactly that."""

    config: ServiceConfig
    runtime: ServiceRuntime | None
    probes: list[Probe]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    first_round: asyncio.Event = field(default_factory=asyncio.Event)
    reported: set[str] = field(default_factory=set)
    replication: Replication | None = None  # its Litestream child (or the operator's unit)
    first_started: asyncio.Event = field(default_factory=asyncio.Event)  # every probe's first run has begun
    started: set[str] = field(default_factory=set)


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        metrics: Metrics | None = None,
        observations: ObservationLog | None = None,
        clock: Callable[[], float] = time.time,
        probe_builder: ProbeBuilder = build_probes,
        task_restart_delay: float = TASK_RESTART_DELAY,
        notifier: Notifier | None = None,
        with_runtimes: bool = True,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.observations = observations or ObservationLog(*observation_retention(config))
        self.clock = clock
        self.state_dir = StateDir(config.daemon.state_dir)
        self.notifier = notifier or Notifier()
        self.with_runtimes = with_runtimes
        self.observation_listeners: list[ObservationListener] = []
        self.tick_listeners: list[TickListener] = []
        self.metrics_server_address: tuple[str, int] | None = None
        self.should_exit = False
        self.force_exit = False
        self.reload_requested = False
        self.ready = False
        self.started_at = clock()
        self.history: History | None = None
        # The service locks and the state DB's windows and blocks, read for all services in one hop a second.
        self.external_reads: ExternalReads | None = None
        self.alerts: WebhookAlerts | None = None
        self.services: dict[str, _ServiceSlot] = {}
        self._probe_builder = probe_builder
        self.task_restart_delay = task_restart_delay
        self._task_factories: list[tuple[str, TaskFactory]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._exit_event: asyncio.Event | None = None
        self._metrics_server: tuple[WSGIServer, threading.Thread] | None = None
        self._http: HttpClient | None = None
        self._status_server: StatusServer | None = None
        self._stopping = threading.Event()
        self._last_watchdog = 0.0
        self._status_sent: str | None = None  # the STATUS= line the service manager has
        self._reload_task: asyncio.Task[None] | None = None
        # Its own load, measured: failures it causes are inconclusive, decisions wait, intervals stretch.
        self.self_load = SelfLoad(self.metrics)
        # One file-watch observer for every service's deploy watcher (services sharing a code dir share its watch).
        self.watch_observer = SharedObserver()
        # One /proc/locks reader for every service's lock probe (a read taken within 0.25 s is shared).
        self.proc_locks = SharedProcLocks()
        self.lock_rounds = LockRounds()  # every service's lock probes: one thread hop per turn of the loop

    @property
    def probes(self) -> dict[str, list[Probe]]:
        return {name: slot.probes for name, slot in self.services.items()}

    def add_task_factory(self, name: str, factory: TaskFactory) -> None:
        """Run ``factory()`` as a long-running task from startup to shutdown; restart it if it crashes."""
        self._task_factories.append((name, factory))

    # Lifecycle

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT (or ``request_exit()``). Raise DaemonStartupError if startup fails."""
        self._exit_event = asyncio.Event()
        self.self_load.install_executor(asyncio.get_running_loop())  # serve() owns the loop: measure its workers
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
        loop.add_signal_handler(signal.SIGHUP, self.handle_reload)
        return [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]

    def handle_exit(self, signum: int) -> None:
        """Signal handler: set a flag, nothing else. A second SIGINT means "do not wait for tasks"."""
        if self.should_exit and signum == signal.SIGINT:
            self.force_exit = True
        log.info("received %s, shutting down", signal.Signals(signum).name)
        self.request_exit()

    def handle_reload(self) -> None:
        """SIGHUP: only a flag; the next tick reloads."""
        self.reload_requested = True

    def request_exit(self) -> None:
        self.should_exit = True
        if self._exit_event is not None:
            self._exit_event.set()

    async def startup(self) -> None:
        # What can be checked is checked before anything is created: a config that cannot run leaves no state
        # dir or DB behind, and a taken metrics port is found before them too.
        problems = preflight_problems(self.config, status_socket=self.with_runtimes)
        if problems:
            raise DaemonStartupError("; ".join(f"{problem.key}: {problem.message}" for problem in problems))
        self._start_metrics_server()
        try:
            self.state_dir.ensure()
        except OSError as error:
            raise DaemonStartupError(f"cannot create the state dir {self.state_dir.root}: {error}") from error
        if self.with_runtimes:
            self.history = History(self.state_dir.history_db, clock=self.clock)
            try:
                await asyncio.to_thread(self.history.upgrade_in_child)
            except Exception as error:
                raise DaemonStartupError(f"cannot open the state DB {self.state_dir.history_db}: {error}") from error
            self.external_reads = ExternalReads(self.history, self.state_dir.root)
        if self.notifier.enabled:
            interval = self.notifier.watchdog_interval()
            log.info(
                "notifying the service manager at %s through %s%s",
                self.notifier.address,
                self.notifier.backend,
                f", watchdog ping every {interval:g}s" if interval else "",
            )
        # The CA bundle is read at the first https connection, if any (host/tls_context.py: ~1.4 MiB).
        self._http = HttpClient()
        self.alerts = WebhookAlerts(
            self.config.daemon.webhooks,
            self._http,
            self.metrics,
            self.clock,
            alertmanagers=self.config.daemon.alertmanager,
        )
        self._spawn("self-load heartbeat", self.self_load.run())
        for service in self.config.service:
            await self._start_service(service)
        for name, factory in self._task_factories:
            self._spawn(name, self._supervise(name, factory))
        if self.with_runtimes:
            self._status_server = StatusServer(
                self.config.daemon.socket_path, self.status, {PAUSE_REQUEST: ReplicationHolds(self._holdable)}
            )
            try:
                await self._status_server.start()
            except OSError as error:
                raise DaemonStartupError(f"cannot open the status socket: {error}") from error
        log.info(
            "started: %d service(s)%s", len(self.config.service), ", dry run" if self.config.daemon.dry_run else ""
        )
        self._spawn("ready", self._announce_ready())

    async def _start_service(self, service: ServiceConfig) -> None:
        assert self._http is not None  # noqa: S101 - startup() created it
        replication = replication_for(service, state_dir=self.state_dir, metrics=self.metrics)
        context = ProbeContext(
            http=self._http,
            state_dir=self.state_dir,
            clock=self.clock,
            stopping=self._stopping,
            replication=replication,
            proc_locks=self.proc_locks,
            lock_rounds=self.lock_rounds,
        )
        try:
            probes = self._probe_builder(service, context)
        except OSError as error:
            raise DaemonStartupError(f"{service.name}: cannot set up probes: {error}") from error
        runtime = None
        if self.with_runtimes and self.history is not None and self.alerts is not None:
            runtime = ServiceRuntime(
                service,
                state_dir=self.state_dir,
                history=self.history,
                metrics=self.metrics,
                observations=self.observations,
                http=self._http,
                alerts=self.alerts,
                dry_run=self.config.daemon.dry_run,
                clock=self.clock,
                replication=replication,
                overload=self.self_load,
                watch_observer=self.watch_observer,
                external=self.external_reads,
            )
            await runtime.start()
        slot = _ServiceSlot(service, runtime, probes, replication=replication)
        if replication is not None:
            await replication.start()  # after an interrupted restore was finished: never replicate a half swap
        self.services[service.name] = slot
        self.metrics.initialise_service(
            service.name,
            [probe.name for probe in probes],
            {rule.name: [rung.kind for rung in rule.ladder] for rule in effective_rules(service) if rule.enabled},
        )
        if replication is not None:
            self.metrics.initialise_replication(service.name)
        if not probes:
            slot.first_round.set()
            slot.first_started.set()
        for probe in probes:
            self.self_load.register(service.name, probe.name, probe.interval)
            slot.tasks.append(self._spawn(f"probe {service.name}/{probe.name}", self._run_probe(slot, probe)))
        if runtime is not None:
            slot.tasks.append(
                self._spawn(f"backups {service.name}", self._supervise(f"backups {service.name}", runtime.run_backups))
            )
            if runtime.replica_drills is not None:  # replication.drill_every: the replica restored and checked
                name = f"replica drills {service.name}"
                slot.tasks.append(self._spawn(name, self._supervise(name, runtime.replica_drills.run)))
        log.info("%s: probing %s", service.name, ", ".join(probe.name for probe in probes) or "nothing")

    async def _stop_service(self, name: str) -> None:
        slot = self.services.pop(name)
        self.self_load.forget(name)
        if self.external_reads is not None:
            self.external_reads.forget(name)
        if slot.runtime is not None:
            slot.runtime.stop()
            if slot.runtime.policy.busy and slot.runtime.policy.task is not None:
                log.info("%s: waiting for the running recovery before stopping it", name)
                await asyncio.wait({slot.runtime.policy.task}, timeout=self.config.daemon.shutdown_timeout)
        if slot.replication is not None:
            await slot.replication.stop()
        for task in slot.tasks:
            task.cancel()
        if slot.tasks:
            await asyncio.wait(slot.tasks, timeout=self.config.daemon.shutdown_timeout)
        for task in slot.tasks:
            if task in self._tasks:
                self._tasks.remove(task)

    async def _announce_ready(self) -> None:
        """READY=1 once start-up is done (metrics listener, state DB, status socket, an interrupted restore dealt
        with) and every probe's first run has *begun*: a slow probe (a latency path at its 10 s timeout) must not
        keep systemd waiting, and `systemctl start` return late, for an answer the policy waits for anyway."""
        waits = [slot.first_started.wait() for slot in self.services.values()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), FIRST_ROUND_TIMEOUT)
        self.ready = True
        self.notifier.ready()
        self.notifier.status(self.status_line())
        log.info("ready: first probe round started")

    async def main_loop(self) -> None:
        if self._exit_event is None:
            self._exit_event = asyncio.Event()
        exit_event = self._exit_event
        if self.should_exit:
            exit_event.set()
        loop = asyncio.get_running_loop()
        # The watchdog is pinged from the tick, so the tick must come at least as often as the pings are due.
        tick = min(TICK_SECONDS, self.notifier.watchdog_interval() or TICK_SECONDS)
        expected = loop.time() + tick
        while not exit_event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, expected - loop.time())):
                    await exit_event.wait()
            if exit_event.is_set():
                break
            now = loop.time()
            lag = max(0.0, now - expected)  # rollbackd_loop_lag_seconds comes from self_load's finer heartbeat
            await self.on_tick(lag)
            expected = max(expected + tick, now)

    async def on_tick(self, lag: float = 0.0) -> None:
        self._ping_watchdog(lag)
        if self.reload_requested and not self.reloading:
            # In a task of its own: a reload may wait (for a running recovery, for the service lock) far longer
            # than the watchdog interval, and the tick must go on pinging meanwhile.
            self.reload_requested = False
            self._reload_task = asyncio.get_running_loop().create_task(self._reload_reporting_failure(), name="reload")
        if self.ready and self.notifier.enabled:
            # Sent when it changed, not every second: each is a datagram to PID 1 (and a line to build).
            line = self.status_line()
            if line != self._status_sent and self.notifier.status(line):
                self._status_sent = line
        for listener in list(self.tick_listeners):
            await _call_safely("tick listener", listener)

    def _ping_watchdog(self, lag: float) -> None:
        """WATCHDOG=1 every WATCHDOG_USEC/2, from the tick itself: a loop that stops ticking stops the pings, and
        systemd kills a hung daemon. A tick that ran later than the whole interval is not a healthy loop."""
        interval = self.notifier.watchdog_interval()
        if interval is None:
            return
        now = time.monotonic()
        if lag < interval and now - self._last_watchdog >= interval * 0.9:
            self.notifier.watchdog()
            self._last_watchdog = now

    @property
    def reloading(self) -> bool:
        return self._reload_task is not None and not self._reload_task.done()

    async def _reload_reporting_failure(self) -> None:
        try:
            await self.reload()
        except Exception:
            log.exception("reload failed part-way; the services it did not reach keep their old config")
            self.notifier.ready()  # systemd must not be left thinking the reload still runs

    async def reload(self) -> None:
        """Load the config file again; apply it if valid, keep the running one otherwise."""
        if self.config_path is None:
            log.warning("reload requested, but the daemon was not started from a config file")
            return
        self.notifier.reloading()
        try:
            new = await asyncio.to_thread(load_config_in_child, self.config_path)
        except ConfigError as error:
            log.error("reload rejected, the running config stays: %s", error.render().replace("\n", "; "))
            self.metrics.config_reloads.labels(outcome="rejected").inc()
            self.notifier.ready()
            return
        restart_needed = [
            key
            for key in ("state_dir", "metrics_listen", "control_socket")
            if getattr(new.daemon, key) != getattr(self.config.daemon, key)
        ]
        if restart_needed:
            log.warning("reload: %s changed; that takes a restart (the rest is applied)", ", ".join(restart_needed))
            kept = {key: getattr(self.config.daemon, key) for key in restart_needed}
            new = replace(new, daemon=replace(new.daemon, **kept))
        daemon_changed = new.daemon != self.config.daemon
        old_services = {service.name: service for service in self.config.service}
        new_services = {service.name: service for service in new.service}
        for name, service in old_services.items():
            if name not in new_services or new_services[name] != service or daemon_changed:
                await self._stop_service(name)
                # Its new probes export afresh: a series of a probe, path or table no longer configured must not
                # stay behind with its last value (a stale failing probe_success would keep an alert firing).
                self.metrics.forget_service(name)
                if name not in new_services:
                    self.observations.forget(name)
                    log.info("%s: no longer watched", name)
        self.config = new
        configure_logging(new.daemon.log_level, secrets=secrets_in(new))
        if self.alerts is not None:
            self.alerts.webhooks = new.daemon.webhooks
            self.alerts.alertmanager.configure(new.daemon.alertmanager)
        for name, service in new_services.items():
            if name not in self.services:
                await self._start_service(service)
        self.metrics.config_reloads.labels(outcome="success").inc()
        log.info("reloaded %s: %d service(s)", self.config_path, len(new.service))
        self.notifier.ready()

    async def shutdown(self) -> None:
        self.notifier.stopping()
        self._stopping.set()
        timeout = 0.0 if self.force_exit else self.config.daemon.shutdown_timeout
        if self._reload_task is not None and not self._reload_task.done():
            # Let it finish handing services over (it may be waiting for one's recovery), then stop what it built.
            if timeout:
                await asyncio.wait({self._reload_task}, timeout=timeout)
            self._reload_task.cancel()
            await asyncio.wait({self._reload_task})
        for slot in self.services.values():
            if slot.runtime is not None:
                slot.runtime.policy.closing = True  # a probe result arriving now must not start a new recovery
                slot.runtime.scheduler.abandon_after(timeout)
        recoveries = [
            slot.runtime.policy.task
            for slot in self.services.values()
            if slot.runtime is not None and slot.runtime.policy.busy and slot.runtime.policy.task is not None
        ]
        if recoveries and timeout:
            log.info("waiting up to %.0fs for %d running recovery action(s)", timeout, len(recoveries))
            await asyncio.wait(recoveries, timeout=timeout)
        for slot in self.services.values():
            if slot.runtime is not None:
                slot.runtime.stop()
        self.watch_observer.stop()
        replicas = [slot.replication.stop() for slot in self.services.values() if slot.replication is not None]
        if replicas:
            await asyncio.gather(*replicas)
        for task in self._tasks:
            task.cancel()
        for task in recoveries:
            task.cancel()
        if self._tasks:
            # A zero timeout (second SIGINT) must mean "do not wait", not "wait forever".
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                log.warning("task %s did not stop within %.0fs", task.get_name(), timeout)
        self._tasks.clear()
        if self.alerts is not None:
            await self.alerts.drain(min(5.0, timeout) if timeout else 0.1)
        if self._status_server is not None:
            await self._status_server.close()
            self._status_server = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._metrics_server is not None:
            server, thread = self._metrics_server
            await asyncio.to_thread(server.shutdown)
            server.server_close()
            thread.join(timeout=5)
            self._metrics_server = None
        if self.history is not None:
            self.history.close()

    # Status

    def status_line(self) -> str:
        """One line for systemd's STATUS=: "vbrpg: OK, last backup 3m ago"."""
        parts = []
        now = self.clock()
        for name, slot in self.services.items():
            if slot.runtime is None:
                parts.append(f"{name}: probing")
                continue
            state = slot.runtime.policy.state.value.upper()
            backup = slot.runtime.scheduler.last_backup
            age = f"last backup {humanize_age(now - backup.manifest.created_at)} ago" if backup else "no backup yet"
            parts.append(f"{name}: {state}, {age}")
        return "; ".join(parts) or "no services"

    def _holdable(self, name: str) -> Holdable | None:
        """The Litestream child a `rollbackd restore` pauses over the socket (the operator's unit it stops itself)."""
        slot = self.services.get(name)
        if slot is None or not isinstance(slot.replication, LitestreamSupervisor) or slot.runtime is None:
            return None
        return Holdable(slot.replication, slot.runtime.settle_orphaned_restore)

    async def status(self) -> dict[str, Any]:
        """The whole status document `rollbackd status` prints."""
        services = {}
        for name, slot in list(self.services.items()):  # a reload may add or remove services during the awaits
            entry: dict[str, Any] = {}
            if slot.runtime is not None:
                entry.update(slot.runtime.describe())
                entry.update(await asyncio.to_thread(self._recorded_status, name))
            else:
                latest = self.observations.latest_by_probe(name)
                entry["probes"] = {p: {"ok": o.ok, "reason": o.reason, "at": o.started_at} for p, o in latest.items()}
            if slot.replication is not None:
                entry["replication"] = _replication_status(
                    slot.replication, self.observations.latest(name, "replication")
                )
            services[name] = entry
        return {
            "daemon": {
                "version": __version__,
                "pid": os.getpid(),
                "started_at": self.started_at,
                "ready": self.ready,
                "dry_run": self.config.daemon.dry_run,
                "config": str(self.config_path) if self.config_path else None,
                "metrics": (
                    f"http://{self.metrics_server_address[0]}:{self.metrics_server_address[1]}/metrics"
                    if self.metrics_server_address
                    else None
                ),
                "self_load": self.self_load.describe(),
            },
            "services": services,
        }

    def _recorded_status(self, name: str) -> dict[str, Any]:
        """From the state DB: the deploy window, blocked revisions and recent incidents."""
        assert self.history is not None  # noqa: S101 - only called when runtimes exist
        window = self.history.open_deploy_window(name)
        slot = self.services.get(name)
        return {
            "deploy_window": (
                {
                    "opened_at": window.opened_at,
                    "closes_at": window.closes_at,
                    "trigger": window.trigger,
                    "from_revision": window.from_revision,
                }
                if window
                else None
            ),
            "blocked_revisions": sorted(self.history.blocked_revisions(name)),
            "incidents": [row.as_dict() for row in self.history.history_rows(name, limit=5)],
            "pending_restore": pending_summary(self.state_dir.root, name),
            **({"last_backup": slot.runtime.last_backup_on_disk()} if slot and slot.runtime else {}),
        }

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

    def _spawn(self, name: str, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.append(task)
        return task

    async def _run_probe(self, slot: _ServiceSlot, probe: Probe) -> None:
        """Run ``probe`` every ``interval`` seconds from the start of one run to the next; a slow run delays the
        next one rather than piling runs up. While the daemon is overloaded the interval stretches (self_load). An
        aligned probe (ALIGNED_PROBES) runs first at once, then on the grid of its (stretched) interval that every
        service's run of it shares (``on_grid``), so that they come due in one turn of the loop (lock_rounds.py)."""
        loop = asyncio.get_running_loop()
        next_run = loop.time()
        aligned = probe.name in ALIGNED_PROBES
        slot.started.add(probe.name)
        if len(slot.started) == len(slot.probes):
            slot.first_started.set()
        while not self._stopping.is_set():  # besides cancellation: a swallowed cancel must not keep it running
            late_by = max(0.0, loop.time() - next_run)
            observation = await observe(probe, self.clock, late_by=late_by, judge=self.self_load.judge)
            self.self_load.ran(probe.service, probe.name)
            try:
                await self.record(probe, observation)
            except Exception:
                log.exception("recording an observation of %s/%s failed", probe.service, probe.name)
            slot.reported.add(probe.name)
            if len(slot.reported) == len(slot.probes):
                slot.first_round.set()
            step = probe.interval * self.self_load.stretch(probe.name)
            next_run = on_grid(next_run + step, step) if aligned else next_run + step
            next_run = max(next_run, loop.time())
            await asyncio.sleep(next_run - loop.time())

    async def record(self, probe: Probe, observation: Observation) -> None:
        """Keep ``observation`` in the log, export it as metrics, log a change of state, tell the listeners."""
        previous = self.observations.latest(observation.service, observation.probe)
        self.observations.append(observation)
        labels = {"service": observation.service, "probe": observation.probe}
        metrics = self.metrics
        series = metrics.probe_series(observation.service, observation.probe)
        series.success.set(1 if observation.ok else 0)
        series.duration_seconds.observe(observation.duration)
        series.last_run_timestamp_seconds.set(observation.started_at + observation.duration)
        if not observation.ok:
            metrics.probe_failures.labels(**labels, reason=observation.reason).inc()
        if observation.inconclusive:
            metrics.probe_inconclusive.labels(**labels).inc()
        try:
            probe.export(metrics, observation)
        except Exception:
            log.exception("exporting metrics of %s/%s failed", observation.service, observation.probe)
        if previous is None or (previous.ok, previous.reason) != (observation.ok, observation.reason):
            _log_change(observation, previous)
        slot = self.services.get(observation.service)
        if slot is not None and slot.runtime is not None:
            await _call_safely("policy", slot.runtime.on_observation, observation)
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


def on_grid(when: float, step: float) -> float:
    """The last multiple of ``step`` (on the loop's clock) at or before ``when``: the same instant for every probe
    of that interval, whatever its phase was. The gap to the run after a probe's first one (or after its interval
    was stretched or given back) is therefore at most ``step``, never longer than the interval asks, and every
    later gap is ``step``. The epsilon keeps a grid instant plus ``step`` from flooring back onto itself."""
    return math.floor(when / step + GRID_EPSILON) * step


async def _call_safely(what: str, function: Callable[..., Awaitable[None] | None], *args: Any) -> None:
    """Call a plug-in's callback; a failure is logged, never allowed to stop the caller."""
    try:
        result = function(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("%s %r failed", what, function)


def _replication_status(replication: Replication, latest: Observation | None) -> dict[str, Any]:
    """The child's state and what the replication probe last saw of the replica."""
    status = replication.describe()
    if latest is not None:
        status.update({"ok": latest.ok, "reason": latest.reason, "at": latest.started_at, **latest.values})
        if "error" in latest.detail:
            status.setdefault("probe_error", latest.detail["error"])
    return status


def _log_change(observation: Observation, previous: Observation | None) -> None:
    where = f"{observation.service}/{observation.probe}"
    extra = {"service": observation.service, "probe": observation.probe}
    if observation.ok:
        if previous is None:
            log.info("%s: ok", where, extra=extra)
        else:
            log.info("%s: ok again (was %s)", where, previous.reason, extra=extra)
        return
    error = observation.detail.get("error")
    doubt = f"; inconclusive: {observation.inconclusive}" if observation.inconclusive else ""
    log.warning("%s: failing: %s%s%s", where, observation.reason, f" ({error})" if error else "", doubt, extra=extra)
