"""The service's main process: is it there, and what does it use (CPU, memory, open files), via psutil.

The pid comes from systemd's ``MainPID`` when the service is a systemd unit, else from ``probes.process.pidfile``,
else from ``probes.process.match`` (every string must occur in the command line; the oldest such process wins, so
the master is chosen over its workers). psutil ``Process`` objects are cached per pid: ``cpu_percent`` measures
since the previous call on the same object, and psutil notices a pid reused by another process. The pidfile is
read again only when its stat (size, mtime, inode, device) changes; finding the pid and inspecting the process
is one trip to a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from rollbackd.config.model import ServiceConfig, SystemdControl
from rollbackd.host.commands import run_command_async
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.probes.base import DEFAULT_TIMEOUT, ProbeContext
from rollbackd.probes.unchanged import FileStamp


@dataclass(frozen=True)
class PidLookup:
    pid: int | None
    source: str  # systemd, pidfile, match
    error: str = ""


def parse_main_pid(output: str) -> int | None:
    """Parse ``systemctl show -p MainPID --value``: a pid, or None for 0 (the unit has no running main process)."""
    text = output.strip()
    if not text.isdigit():
        return None
    pid = int(text)
    return pid or None


def has_pid_source(service: ServiceConfig) -> bool:
    config = service.probes.process
    return isinstance(service.control, SystemdControl) or config.pidfile is not None or bool(config.match)


class ProcessProbe:
    name = "process"

    def __init__(self, service: ServiceConfig, context: ProbeContext, systemctl: str = "systemctl") -> None:
        config = service.probes.process
        self.service = service.name
        self.interval = config.every
        self.timeout = DEFAULT_TIMEOUT
        self.control = service.control
        self.pidfile = config.pidfile
        self.match = list(config.match)
        self.systemctl = systemctl
        self._processes: dict[int, psutil.Process] = {}
        self._pidfile_read: tuple[FileStamp, PidLookup] | None = None  # the pidfile's stamp when last read

    async def run(self) -> Observation:
        if isinstance(self.control, SystemdControl):
            lookup = await self.find_pid()  # systemctl: a subprocess awaited on the loop
            return await asyncio.to_thread(self._inspect_found, lookup)
        return await asyncio.to_thread(self._find_and_inspect)

    def _find_and_inspect(self) -> Observation:
        """In one worker thread: the pid from the pidfile or the command line, then its process."""
        return self._inspect_found(self._pid_from_file(self.pidfile) if self.pidfile else self._pid_from_match())

    def _inspect_found(self, lookup: PidLookup) -> Observation:
        if lookup.pid is None:
            return self._down("no_pid", {"source": lookup.source, "error": lookup.error})
        return self._inspect(lookup.pid, lookup.source)

    async def find_pid(self) -> PidLookup:
        if isinstance(self.control, SystemdControl):
            argv = [self.systemctl, *(["--user"] if self.control.user else []), "show", "-p", "MainPID", "--value"]
            result = await run_command_async([*argv, self.control.unit], timeout=self.timeout)
            if not result.ok:
                return PidLookup(None, "systemd", result.summary())
            pid = parse_main_pid(result.output_tail)
            return PidLookup(pid, "systemd", "" if pid else f"{self.control.unit} has no main process")
        if self.pidfile is not None:
            return await asyncio.to_thread(self._pid_from_file, self.pidfile)
        return await asyncio.to_thread(self._pid_from_match)

    def _pid_from_file(self, pidfile: Path) -> PidLookup:
        try:
            stamp = FileStamp.of(os.stat(pidfile))
            if self._pidfile_read is not None and self._pidfile_read[0] == stamp:
                return self._pidfile_read[1]
            text = pidfile.read_text(encoding="ascii", errors="replace").strip()
        except OSError as error:
            self._pidfile_read = None
            return PidLookup(None, "pidfile", f"cannot read {pidfile}: {error.strerror or error}")
        if not text.isdigit() or int(text) <= 0:
            lookup = PidLookup(None, "pidfile", f"{pidfile} does not hold a pid: {text[:40]!r}")
        else:
            lookup = PidLookup(int(text), "pidfile")
        self._pidfile_read = (stamp, lookup)
        return lookup

    def _pid_from_match(self) -> PidLookup:
        own = os.getpid()
        found: list[tuple[float, int]] = []
        for process in psutil.process_iter(["cmdline", "create_time"]):
            command = " ".join(process.info.get("cmdline") or ())
            if process.pid != own and command and all(part in command for part in self.match):
                found.append((process.info.get("create_time") or 0.0, process.pid))
        if not found:
            return PidLookup(None, "match", f"no process whose command line contains {self.match}")
        return PidLookup(min(found)[1], "match")

    def _inspect(self, pid: int, source: str) -> Observation:
        detail: dict[str, object] = {"pid": pid, "source": source}
        process = self._processes.get(pid)
        if process is None or not process.is_running():
            try:
                process = psutil.Process(pid)
            except psutil.NoSuchProcess:
                self._processes.pop(pid, None)
                return self._down("not_running", {**detail, "error": f"no process {pid}"})
            self._processes = {pid: process}  # forget pids of earlier incarnations
        try:
            with process.oneshot():
                status = process.status()
                if status == psutil.STATUS_ZOMBIE:
                    return self._down("zombie", {**detail, "status": status})
                values = {
                    "up": 1.0,
                    "pid": float(pid),
                    "cpu_ratio": process.cpu_percent(interval=None) / 100.0,
                    "rss_bytes": float(process.memory_info().rss),
                    "start_time": process.create_time(),
                }
                # /proc/<pid>/fd is readable by the process's own user only: under the packaged unit (user
                # rollbackd watching user vbrpg's process) there is no fd count, and the rest still counts.
                with contextlib.suppress(psutil.AccessDenied):
                    values["open_fds"] = float(process.num_fds())
                detail.update({"status": status, "name": process.name()})
        except psutil.ZombieProcess:  # a subclass of NoSuchProcess: first
            return self._down("zombie", detail)
        except psutil.NoSuchProcess:
            return self._down("not_running", {**detail, "error": f"process {pid} exited"})
        return Observation(self.service, self.name, ok=True, values=values, detail=detail)

    def _down(self, reason: str, detail: dict[str, object]) -> Observation:
        return Observation(self.service, self.name, ok=False, reason=reason, values={"up": 0.0}, detail=detail)

    def export(self, metrics: Metrics, observation: Observation) -> None:
        service = self.service
        values = observation.values
        metrics.service_process_up.labels(service=service).set(values.get("up", 0.0))
        if values.get("up"):
            metrics.service_process_cpu_ratio.labels(service=service).set(values["cpu_ratio"])
            metrics.service_process_resident_memory_bytes.labels(service=service).set(values["rss_bytes"])
            if "open_fds" in values:  # left out when /proc/<pid>/fd is not ours to read (another user)
                metrics.service_process_open_fds.labels(service=service).set(values["open_fds"])
            metrics.service_process_start_time_seconds.labels(service=service).set(values["start_time"])
