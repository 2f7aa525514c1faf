"""Wall time of whole `rollbackd` commands, as an operator waits for them: `--help`, `status`, `check-config`.

Each run is a fresh process (interpreter start-up, imports and the command's own work), timed from spawn to exit;
the median of ``--runs`` is shown with the fastest and slowest run, and the CPU the process used (its median).
Given several ``--rollbackd`` executables (a branch's venv and main's), the runs alternate between them, command
by command, so that every executable sees the same machine load. ``--daemon-config`` adds `status` against a
config whose daemon is running (started by you, e.g. `rollbackd --config X run`).

    python bench/cli_wall_time.py --rollbackd .venv/bin/rollbackd --rollbackd ../main/.venv/bin/rollbackd
    python bench/cli_wall_time.py --config config/demo.toml --daemon-config /tmp/running.toml --runs 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections import defaultdict
from pathlib import Path


def commands(config: str, daemon_config: str | None) -> dict[str, list[str]]:
    """The command lines timed, by the name shown in the table (the executable goes in front of each)."""
    timed = {
        "--help": ["--help"],
        "status (no daemon)": ["--config", config, "status"],
        "check-config": ["check-config", config],
    }
    if daemon_config:
        timed["status (daemon answering)"] = ["--config", daemon_config, "status"]
    return timed


def timed_run(argv: list[str]) -> tuple[float, float, int]:
    """Run ``argv`` to its exit: (wall seconds, CPU seconds of the child, exit code)."""
    before = os.times()
    started = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False)
    wall = time.perf_counter() - started
    after = os.times()
    cpu = after.children_user + after.children_system - before.children_user - before.children_system
    return wall, cpu, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rollbackd",
        action="append",
        metavar="PATH",
        help="a rollbackd executable to time (repeat to compare; default: .venv/bin/rollbackd)",
    )
    parser.add_argument("--config", default="config/demo.toml", help="the config of status and check-config")
    parser.add_argument("--daemon-config", help="a config whose daemon is running: also time status against it")
    parser.add_argument("--runs", type=int, default=10, help="runs of each command per executable (median shown)")
    args = parser.parse_args()
    executables = args.rollbackd or [".venv/bin/rollbackd"]
    timed = commands(args.config, args.daemon_config)
    walls: dict[tuple[str, str], list[float]] = defaultdict(list)
    cpus: dict[tuple[str, str], list[float]] = defaultdict(list)
    codes: dict[tuple[str, str], set[int]] = defaultdict(set)
    for _ in range(args.runs):
        for name, argv in timed.items():
            for executable in executables:
                wall, cpu, code = timed_run([executable, *argv])
                walls[name, executable].append(wall)
                cpus[name, executable].append(cpu)
                codes[name, executable].add(code)
    print(f"load average before the last run: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    print()
    print("| command | " + " | ".join(str(Path(executable)) for executable in executables) + " |")
    print("|---|" + "---|" * len(executables))
    for name in timed:
        cells = []
        for executable in executables:
            key = (name, executable)
            cells.append(
                f"{statistics.median(walls[key]):.3f} s ({min(walls[key]):.3f}–{max(walls[key]):.3f}), "
                f"CPU {statistics.median(cpus[key]):.3f} s, exit {'/'.join(map(str, sorted(codes[key])))}"
            )
        print(f"| `{name}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
