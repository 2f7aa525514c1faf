"""`rollbackd run` (the daemon) and `rollbackd probe` (every enabled probe once, printed)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from rollbackd.cli.common import Subcommands, add_command, cli_config_path, load_cli_config, print_json, select_services
from rollbackd.cli.times import is_moment_key, table_time
from rollbackd.exit_codes import ExitCode
from rollbackd.units import human_duration, human_size

if TYPE_CHECKING:
    from rollbackd.config.model import ServiceConfig
    from rollbackd.observation import Observation
    from rollbackd.state.state_dir import StateDir

TRIM_EVERY_SECONDS = 60.0  # how often the daemon hands its freed heap back to the kernel


def register(commands: Subcommands) -> None:
    add_command(commands, "run", "run the daemon: probe, back up, recover (stops on SIGTERM/SIGINT)", run)
    probe = add_command(
        commands,
        "probe",
        "run every enabled probe once and print what it saw (exit 0 all ok, 1 any failing)",
        probe_once,
    )
    probe.add_argument("service", nargs="?", help="only this service (default: all)")
    probe.add_argument("--json", action="store_true", help="print the observations as JSON")


def run(args: argparse.Namespace) -> ExitCode:
    import asyncio
    import logging

    from rollbackd.host.glibc_malloc import PeriodicTrim, limit_malloc_arenas

    limit_malloc_arenas()  # before any thread starts: one arena for all (20 services: -10.8 MiB of 76.8)

    from rollbackd.config.child_load import load_config_in_child
    from rollbackd.config.secrets import exposed_secrets_warning, secrets_in
    from rollbackd.metrics import daemon_metrics
    from rollbackd.runtime.daemon import Daemon, DaemonStartupError
    from rollbackd.runtime.systemd import configure_logging

    path = cli_config_path(args)
    config = load_config_in_child(path)  # pydantic validates in a child, never loaded here: -10 MiB for life
    configure_logging(config.daemon.log_level, secrets=secrets_in(config))
    exposed = exposed_secrets_warning(path, config)
    if exposed:
        logging.getLogger("rollbackd").warning("%s", exposed)
    daemon = Daemon(config, config_path=path, metrics=daemon_metrics())
    # Freed heap handed back each minute (the first after start-up's backups and checks): 20 services -2.3 MiB,
    # one -3 MiB, for ~2 ms of CPU per trim. In the process's entry point, as the arena limit: it is process-wide.
    daemon.tick_listeners.append(PeriodicTrim(TRIM_EVERY_SECONDS).tick)
    try:
        asyncio.run(daemon.serve())
    except DaemonStartupError as error:
        logging.getLogger("rollbackd").error("cannot start: %s", error)
        print(f"rollbackd run: {error}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    return ExitCode.OK


def probe_once(args: argparse.Namespace) -> ExitCode:
    import asyncio

    from rollbackd.runtime.systemd import configure_logging
    from rollbackd.state.state_dir import StateDir

    config = load_cli_config(args)
    configure_logging("warning")
    try:
        services = select_services(config, args.service)
    except KeyError as error:
        print(f"rollbackd probe: {error.args[0]}", file=sys.stderr)
        return ExitCode.CONFIG
    state_dir = StateDir(config.daemon.state_dir)
    try:
        state_dir.ensure()
    except OSError as error:
        print(f"rollbackd probe: cannot create the state dir {state_dir.root}: {error}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    observations = asyncio.run(observe_services(services, state_dir))
    if args.json:
        print_json([observation.as_dict() for observation in observations])
    else:
        for observation in observations:
            print(render(observation, utc=args.utc))
    return ExitCode.OK if all(observation.ok for observation in observations) else ExitCode.FAILED


async def observe_services(services: list[ServiceConfig], state_dir: StateDir) -> list[Observation]:
    """Run every enabled probe of ``services`` once, concurrently; return their observations in config order."""
    import asyncio

    from rollbackd.host.http_client import HttpClient
    from rollbackd.probes import ProbeContext, build_probes, observe

    async with HttpClient() as client:
        context = ProbeContext(http=client, state_dir=state_dir)
        probes = [probe for service in services for probe in build_probes(service, context)]
        return list(await asyncio.gather(*(observe(probe) for probe in probes)))


def render(observation: Observation, *, utc: bool = False) -> str:
    """Two lines for a person: verdict, how long the probe took and its values in human units, then the detail as
    compact JSON. ``--json`` keeps the raw numbers."""
    verdict = "ok" if observation.ok else f"FAIL {observation.reason}"
    values = " ".join(human_value(key, value, utc=utc) for key, value in observation.values.items())
    took = human_duration(observation.duration)
    head = f"{observation.service:<12} {observation.probe:<12} {verdict:<28} {took:>8}  {values}".rstrip()
    detail = json.dumps(dict(observation.detail), default=str, separators=(", ", ": "))
    return f"{head}\n{'':<12} {detail}"


def human_value(key: str, value: float, *, utc: bool = False) -> str:
    """``key=value`` in the unit its name says: bytes as MiB, seconds as ms or s, epochs as a local time with its
    zone, ratios as percent (``rss=80.6 MiB``, ``latency=12 ms``, ``start_time=2026-12-01 23:50:02 UTC``)."""
    name = key.rsplit(":", 1)[-1]  # per-path values are "<path>:<name>"
    if name.endswith("_bytes"):
        return f"{key.removesuffix('_bytes')}={human_size(value)}"
    if is_moment_key(name):
        return f"{key}={table_time(value, utc=utc, seconds=True)}"
    if name.endswith("_seconds") or name in ("latency", "p50", "p95", "p99", "sum"):
        return f"{key}={human_duration(value)}"
    if name.endswith("_ratio") or "_ratio_" in name:
        return f"{key}={value * 100:.1f}%"
    return f"{key}={_number(value)}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"
