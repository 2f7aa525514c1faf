"""What a valid config still cannot do on this machine, found before anything is created.

The model checks the file's shape; these checks look at the machine: a ``backups.dir`` that is the database
file, a ``database`` that is a directory, a ``state_dir`` that is a file, a status socket path longer than
AF_UNIX allows, a metrics host that does not resolve. `check-config` reports them as errors and the daemon
refuses to start on them before it creates its state dir and DB. Warnings are things that work but are
probably not meant: metrics served off loopback, probes more often than once a second.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from rollbackd.config.model import Config, ConfigProblem, ProbesConfig

# sockaddr_un.sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


def preflight_problems(config: Config, *, status_socket: bool = True) -> list[ConfigProblem]:
    """Every reason ``config`` cannot run here, each at its key path (no line: the caller may add one).
    ``status_socket=False`` for a daemon that opens none (embedded, without runtimes)."""
    problems = []
    daemon = config.daemon
    if daemon.state_dir.exists() and not daemon.state_dir.is_dir():
        problems.append(ConfigProblem("daemon.state_dir", f"{daemon.state_dir} is a file, not a directory"))
    socket_bytes = len(os.fsencode(str(daemon.socket_path)))
    if status_socket and socket_bytes > MAX_SOCKET_PATH_BYTES:
        key = "daemon.control_socket" if daemon.control_socket else "daemon.state_dir"
        problems.append(
            ConfigProblem(
                key,
                f"the status socket {daemon.socket_path} is {socket_bytes} bytes long; a unix socket path holds at "
                f"most {MAX_SOCKET_PATH_BYTES} (set daemon.control_socket to a shorter path)",
            )
        )
    address = daemon.metrics_address
    if address is not None:
        try:
            _resolve(*address)
        except OSError as error:
            problems.append(
                ConfigProblem("daemon.metrics_listen", f"cannot resolve the host {address[0]!r}: {_reason(error)}")
            )
    for index, service in enumerate(config.service):
        key = f"service[{index}]"
        if service.database.is_dir():
            problems.append(ConfigProblem(f"{key}.database", f"{service.database} is a directory, not a database file"))
        backups = service.backups.dir
        if _same_path(backups, service.database):
            problems.append(ConfigProblem(f"{key}.backups.dir", f"{backups} is the database file itself"))
        elif backups.exists() and not backups.is_dir():
            problems.append(ConfigProblem(f"{key}.backups.dir", f"{backups} is a file, not a directory"))
    return problems


def preflight_warnings(config: Config) -> list[str]:
    """Things that will run but are probably not meant."""
    warnings = []
    address = config.daemon.metrics_address
    if address is not None:
        try:
            exposed = [host for host in _resolve(*address) if not ipaddress.ip_address(host).is_loopback]
        except (OSError, ValueError):
            exposed = []
        if exposed:
            warnings.append(
                f"daemon.metrics_listen {config.daemon.metrics_listen!r} serves /metrics beyond this host "
                f"({', '.join(sorted(set(exposed)))}): the default is 127.0.0.1; scrape through a proxy or firewall it"
            )
    for index, service in enumerate(config.service):
        for probe, every in _probe_intervals(service.probes):
            if every < 1.0:
                warnings.append(
                    f"service[{index}].probes.{probe} = {every:g}s: more than once a second costs CPU and "
                    f"I/O on the service for little more warning (1s is the shortest the rules are tuned for)"
                )
    return warnings


def _probe_intervals(probes: ProbesConfig) -> Iterator[tuple[str, float]]:
    """(key under probes, seconds) of every enabled probe's interval."""
    for name in ("health", "latency", "sqlite_lock", "schema", "rows", "process"):
        probe = getattr(probes, "schema_" if name == "schema" else name)
        if probe.enabled:
            yield f"{name}.every", float(probe.every)
    if probes.integrity.enabled:
        yield "integrity.quick_every", float(probes.integrity.quick_every)


def _resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (a literal address is itself). Raise OSError when it does not."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


def _reason(error: OSError) -> str:
    return str(error.strerror or error)


def _same_path(first: Path, second: Path) -> bool:
    try:
        return first.resolve() == second.resolve()
    except OSError:
        return False
