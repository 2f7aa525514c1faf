"""Footprint of rollbackd against Monit doing the equivalent HTTP + file checks, side by side in one run.

Starts Monit (foreground, its shortest cycle: `set daemon 1`) with a control file generated into a temp dir, and,
when given, `ROLLBACKD_COMMAND --config CONFIG run`. Samples each one's CPU time (its children included) and RSS
with psutil and prints the CPU used as a share of one core and the RSS, mean and max.

Without --url the run targets a stand-in HTTP server started here (GET /health, GET /api/rooms/ABC123: 200), so
that the requests each tool sends can be counted by User-Agent; with --url it targets a real service (the example
service) and does not count. Without --file a small SQLite file made here is the checked file.

    python bench/footprint.py --seconds 600
    python bench/footprint.py --seconds 600 --url http://127.0.0.1:8000 --file .demo/vbrpg.db \
        --rollbackd-config config/demo.toml
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import psutil

STAND_IN_PATHS = ("/health", "/api/rooms/ABC123")


@dataclass
class Sampled:
    name: str
    process: subprocess.Popen[bytes]
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    rss: list[int] = field(default_factory=list)
    exited: int | None = None


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time of a process, its reaped children and its live descendants."""
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def rss_bytes(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


class StandIn(BaseHTTPRequestHandler):
    """200 for the probed paths; counts requests by User-Agent product (Monit/..., rollbackd/...)."""

    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        agent = (self.headers.get("User-Agent") or "unknown").split("/")[0]
        with self.lock:
            self.counts[agent] += 1
        found = self.path in STAND_IN_PATHS
        body = b'{"status": "ok"}' if found else b"{}"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        return


def monit_control_file(folder: Path, cycle: int, host: str, port: int, paths: list[str], files: list[Path]) -> Path:
    """Monit's equivalent of rollbackd's HTTP probes and file checks. Monit wants its control file 0600."""
    lines = [
        f"set daemon {cycle}",
        f"set logfile {folder / 'monit.log'}",
        f"set idfile {folder / 'monit.id'}",
        f"set statefile {folder / 'monit.state'}",
        f"set pidfile {folder / 'monit.pid'}",
        "",
    ]
    for index, path in enumerate(paths):
        lines += [
            f"check host target_{index} with address {host}",
            f'  if failed port {port} protocol http request "{path}" status = 200 timeout 2 seconds then alert',
            "",
        ]
    for index, path in enumerate(files):
        lines += [
            f"check file file_{index} with path {path}",
            "  if changed timestamp then alert",
            "  if size > 1 GB then alert",
            "  if failed permission 644 then alert",
            "",
        ]
    control = folder / "monitrc"
    control.write_text("\n".join(lines))
    control.chmod(0o600)
    return control


def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe_runs(metrics_url: str) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
    """From rollbackd's /metrics: per (service, probe), runs so far and the interval it is scheduled at now."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:  # noqa: S310 - the daemon's own listener
        text = response.read().decode()
    counts: dict[tuple[str, str], float] = {}
    intervals: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        for name, into in (
            ("rollbackd_probe_duration_seconds_count{", counts),
            ("rollbackd_probe_interval_seconds{", intervals),
        ):
            if line.startswith(name):
                labels, value = line[len(name) :].rsplit("} ", 1)
                fields = dict(part.split("=", 1) for part in labels.split(","))
                into[(fields["service"].strip('"'), fields["probe"].strip('"'))] = float(value)
    return counts, intervals


def cadence_report(
    before: dict[tuple[str, str], float],
    after: dict[tuple[str, str], float],
    intervals: dict[tuple[str, str], float],
    wall: float,
) -> list[str]:
    """Per probe, over all services: runs per second, min and max, and as a share of 1/interval (1.00 = on
    schedule). The interval is the one exported at the end: stretched by the daemon itself while it was
    overloaded (a service that had not started its probes when the measurement began is left out)."""
    runs: dict[str, list[tuple[float, float]]] = defaultdict(list)  # probe -> (runs/s, interval) per service
    for key, count in after.items():
        if key in before and intervals.get(key):
            runs[key[1]].append(((count - before[key]) / wall, intervals[key]))
    lines = []
    for probe, pairs in sorted(runs.items()):
        rates = [rate for rate, _ in pairs]
        shares = [rate * interval for rate, interval in pairs]
        every = "/".join(f"{value:g}" for value in sorted({interval for _, interval in pairs}))
        lines.append(
            f"  {probe:<12} every {every} s: runs/s {min(rates):.3f}-{max(rates):.3f}, "
            f"x interval {min(shares):.2f}-{max(shares):.2f}, {len(pairs)} service(s)"
        )
    return lines


def measure(runs: list[Sampled], seconds: float, warmup: float, sample_every: float) -> float:
    """Sample every run; return the measured wall time (after warm-up)."""
    time.sleep(warmup)
    handles = {run.name: psutil.Process(run.process.pid) for run in runs}
    for run in runs:
        run.cpu_start = cpu_seconds(handles[run.name])
    started = time.monotonic()
    deadline = started + seconds
    while (now := time.monotonic()) < deadline:
        time.sleep(min(sample_every, deadline - now))
        for run in runs:
            if run.process.poll() is not None:
                run.exited = run.process.returncode
                continue
            run.rss.append(rss_bytes(handles[run.name]))
            run.cpu_end = cpu_seconds(handles[run.name])
    return time.monotonic() - started


def footprint_argv(
    *, url: str, database: Path, config: Path, metrics_url: str, seconds: float, warmup: float, rollbackd_command: str
) -> list[str]:
    """This script's argv for a run against a real service: what bench/footprint_stack.py and
    bench/footprint_services.py each run once per config."""
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--seconds",
        str(seconds),
        "--warmup",
        str(warmup),
        "--url",
        url,
        "--file",
        str(database),
        "--rollbackd-command",
        rollbackd_command,
        "--rollbackd-config",
        str(config),
        "--metrics-url",
        metrics_url,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600, help="measured duration (default 600)")
    parser.add_argument("--warmup", type=float, default=15, help="seconds to let both start before measuring")
    parser.add_argument("--sample-every", type=float, default=5, help="RSS sampling interval (default 5 s)")
    parser.add_argument("--monit-cycle", type=int, default=1, help="Monit's `set daemon` (1 s is its minimum)")
    parser.add_argument("--url", help="service base URL (default: a stand-in server started here)")
    parser.add_argument(
        "--path", action="append", dest="paths", help="HTTP paths Monit checks (default /health and a room)"
    )
    parser.add_argument("--file", action="append", type=Path, dest="files", help="files Monit checks (the DB)")
    parser.add_argument("--rollbackd-command", default="rollbackd", help="rollbackd's argv, shell-quoted")
    parser.add_argument("--rollbackd-config", type=Path, help="config to run rollbackd with (omit: Monit alone)")
    parser.add_argument(
        "--metrics-url", help="rollbackd's /metrics: report each probe's runs per second against its interval"
    )
    args = parser.parse_args()
    if shutil.which("monit") is None:
        print("monit is not installed (Debian package monit)", file=sys.stderr)
        return 2
    paths = args.paths or list(STAND_IN_PATHS)

    with tempfile.TemporaryDirectory(prefix="footprint-") as temporary:
        folder = Path(temporary)
        server: ThreadingHTTPServer | None = None
        if args.url:
            target = urlsplit(args.url)
            host, port = target.hostname or "127.0.0.1", target.port or 80
        else:
            host, port = "127.0.0.1", free_port()
            server = ThreadingHTTPServer((host, port), StandIn)
            threading.Thread(target=server.serve_forever, daemon=True).start()
        files = args.files
        if not files:
            database = folder / "vbrpg.db"
            with sqlite3.connect(database) as connection:
                connection.execute("create table players (id integer primary key, name text)")
            connection.close()
            database.chmod(0o644)
            files = [database]

        runs: list[Sampled] = []
        try:
            control = monit_control_file(folder, args.monit_cycle, host, port, paths, files)
            runs.append(Sampled("monit", start(["monit", "-I", "-c", str(control)], folder / "monit.out")))
            if args.rollbackd_config:
                argv = [*shlex.split(args.rollbackd_command), "--config", str(args.rollbackd_config), "run"]
                runs.append(Sampled("rollbackd", start(argv, folder / "rollbackd.out")))
            if args.metrics_url:
                time.sleep(args.warmup)
                before, _ = probe_runs(args.metrics_url)
                wall = measure(runs, args.seconds, 0.0, args.sample_every)
                after, intervals = probe_runs(args.metrics_url)
                cadence = cadence_report(before, after, intervals, wall)
            else:
                wall = measure(runs, args.seconds, args.warmup, args.sample_every)
                cadence = []
        finally:
            for run in runs:
                stop(run.process)
            if server is not None:
                server.shutdown()
                server.server_close()
        for run in runs:
            if run.exited is not None:
                output = (folder / f"{run.name}.out").read_text(errors="replace")[-2000:]
                print(f"{run.name} exited with {run.exited} during the run:\n{output}", file=sys.stderr)

    version = subprocess.run(["monit", "-V"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    print(f"{version}; cycle {args.monit_cycle} s; {len(paths)} HTTP checks, {len(files)} file checks")
    print(f"target: {args.url or f'stand-in server on {host}:{port}'}; measured {wall:.0f} s after {args.warmup:.0f} s")
    print()
    print(f"{'tool':<10} {'CPU % of one core':>18} {'RSS mean MiB':>13} {'RSS max MiB':>12} {'requests/s':>11}")
    agents = {"monit": "Monit", "rollbackd": "rollbackd"}
    for run in runs:
        cpu = (run.cpu_end - run.cpu_start) / wall * 100
        mean = statistics.fmean(run.rss) / 2**20 if run.rss else float("nan")
        peak = max(run.rss, default=0) / 2**20
        rate = f"{StandIn.counts[agents[run.name]] / (wall + args.warmup):.2f}" if server is not None else "n/a"
        print(f"{run.name:<10} {cpu:>18.2f} {mean:>13.1f} {peak:>12.1f} {rate:>11}")
    if not args.rollbackd_config:
        print(f"{'rollbackd':<10} {'not run (pass --rollbackd-config)':>18}")
    if cadence:
        print("\nprobe cadence (rollbackd_probe_duration_seconds_count over the measured time):")
        print("\n".join(cadence))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
