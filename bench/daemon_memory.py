"""The running daemon's memory taken apart (issue 13): what it holds beyond its imports, and what each service adds.

Sets up the example service (seeded, on a free port) with tests/support/stack.py, copies its database N times as
bench/footprint_services.py does (``dry_run``, the probes' default intervals unless ``--every``), starts
``rollbackd run`` with the extra environment given (``--env MALLOC_ARENA_MAX=1``), samples its VmRSS every 5 s
after the warm-up, and at the end reads /proc/PID: smaps_rollup, the threads by name, and /proc/PID/smaps split
into glibc malloc arenas (a thread's own 64 MiB-aligned heap), thread stacks, [heap], other anonymous memory
(pymalloc's arenas, large blocks) and mapped files.

    .venv/bin/python bench/daemon_memory.py --services 1 --seconds 120
    .venv/bin/python bench/daemon_memory.py --services 20 --seconds 120 --env MALLOC_ARENA_MAX=1
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.footprint_services import copy_database, many_services  # noqa: E402
from tests.support.rollbackd_daemon import wait_for  # noqa: E402
from tests.support.stack import Stack  # noqa: E402

# The daemon's imports and config, nothing run: what `rollbackd run` holds before Daemon.serve() (cli/run.py's
# imports; the config validated in a child, as cli/run.py does).
IMPORTS_ONLY = """
import sys
from pathlib import Path
import rollbackd.runtime.daemon
from rollbackd.config.child_load import load_config_in_child
from rollbackd.metrics import daemon_metrics
config, metrics = load_config_in_child(Path(sys.argv[1])), daemon_metrics()
print([line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:")][0])
"""
ARENA_BYTES = 64 * 2**20  # glibc's HEAP_MAX_SIZE on 64-bit: a non-main arena is one such aligned reservation
SAMPLE_EVERY = 5.0


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    path: str
    rss_kib: int


def mappings(pid: int) -> list[Mapping]:
    """/proc/PID/smaps as (range, permissions, path, Rss) per mapping."""
    found: list[Mapping] = []
    head: list[str] | None = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            head = fields
        elif fields[0] == "Rss:" and head is not None:
            start, end = (int(part, 16) for part in head[0].split("-"))
            found.append(Mapping(start, end, head[1], head[5] if len(head) > 5 else "", int(fields[1])))
    return found


def breakdown(pid: int) -> dict[str, tuple[int, int]]:
    """Resident KiB and count per kind of mapping."""
    maps = mappings(pid)
    kinds: dict[str, list[int]] = {}
    skip: set[int] = set()
    for index, mapping in enumerate(maps):
        if index in skip:
            continue
        after = maps[index + 1] if index + 1 < len(maps) else None
        if mapping.path == "[heap]":
            kind = "[heap] (main arena)"
        elif mapping.path.startswith("["):
            kind = mapping.path
        elif mapping.path:
            kind = "files: .so" if ".so" in mapping.path else "files: other"
        elif (
            mapping.start % ARENA_BYTES == 0
            and mapping.perms.startswith("rw")
            and (
                mapping.end - mapping.start == ARENA_BYTES
                or (
                    after is not None
                    and after.start == mapping.end
                    and after.perms.startswith("---")
                    and after.end - mapping.start == ARENA_BYTES
                )
            )
        ):
            kind = "malloc arenas (threads')"
            if after is not None and after.start == mapping.end and after.perms.startswith("---"):
                skip.add(index + 1)
        elif mapping.perms.startswith("---"):
            kind = "guard pages"
        elif (
            index > 0
            and maps[index - 1].perms.startswith("---")
            and maps[index - 1].end == mapping.start
            and mapping.end - mapping.start >= 2**20
            and mapping.end - mapping.start <= 16 * 2**20
        ):
            kind = "thread stacks"
        else:
            kind = "anonymous: other (pymalloc, large blocks)"
        kinds.setdefault(kind, []).append(mapping.rss_kib)
    return {kind: (sum(values), len(values)) for kind, values in kinds.items()}


def status_fields(pid: int, *names: str) -> dict[str, str]:
    wanted = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in names:
            wanted[key] = value.strip()
    return wanted


def rollup(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    return {line.split(":")[0]: line.split(":")[1].strip() for line in lines}


def thread_names(pid: int) -> Counter[str]:
    names: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        name = (task / "comm").read_text().strip()
        names[name.rstrip("0123456789_-") or name] += 1
    return names


def vm_rss_kib(pid: int) -> int:
    return int(status_fields(pid, "VmRSS")["VmRSS"].split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1)
    parser.add_argument("--every", help="every probe at this interval (default: the probes' default intervals)")
    parser.add_argument("--seconds", type=float, default=120, help="measured time after the warm-up")
    parser.add_argument("--warmup", type=float, default=15, help="seconds after READY=1 before sampling")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the daemon's environment")
    args = parser.parse_args()
    environment = {**os.environ, **dict(item.split("=", 1) for item in args.env)}
    with tempfile.TemporaryDirectory(prefix="rollbackd-memory-") as root:
        stack = Stack(Path(root), rooms=2000, players=4000, dry_run=True)
        daemon: subprocess.Popen[bytes] | None = None
        try:
            stack.set_up()
            stack.probe_every = args.every
            stack.write_config()
            config = stack.config_path
            if args.services > 1:
                for index in range(args.services):
                    copy_database(stack.database, stack.database.with_name(f"vbrpg-{index}.db"))
                config = stack.root / "rollbackd-many.toml"
                config.write_text(many_services(stack.config_path.read_text(), args.services))
            imports_only = subprocess.run(  # noqa: S603 - fixed argv
                [sys.executable, "-c", IMPORTS_ONLY, str(config)],
                capture_output=True,
                text=True,
                env=environment,
                check=True,
                timeout=120,
            )
            baseline_kib = int(imports_only.stdout.split()[-2])
            with (stack.root / "daemon.log").open("wb") as output:
                daemon = subprocess.Popen(  # noqa: S603 - fixed argv
                    [sys.executable, "-m", "rollbackd", "--config", str(config), "run"],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=environment,
                    start_new_session=True,
                )
            log = stack.root / "daemon.log"
            wait_for(lambda: b"ready: first probe round" in log.read_bytes(), "READY", timeout=120, step=0.5)
            time.sleep(args.warmup)
            samples = []
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                samples.append(vm_rss_kib(daemon.pid))
                time.sleep(SAMPLE_EVERY)
            pid = daemon.pid
            print(f"\n### {args.services} service(s), {args.every or 'default intervals'}, env {args.env or '-'}")
            print(
                f"VmRSS over {args.seconds:.0f} s ({len(samples)} samples): mean "
                f"{statistics.fmean(samples) / 1024:.1f} MiB, max {max(samples) / 1024:.1f} MiB"
            )
            print(
                f"imports and config only (no daemon run): {baseline_kib / 1024:.1f} MiB; the running daemon adds "
                f"{(statistics.fmean(samples) - baseline_kib) / 1024:.1f} MiB"
            )
            summary = rollup(pid)
            print(
                "smaps_rollup: "
                + ", ".join(f"{key} {int(summary[key].split()[0]) / 1024:.1f}" for key in ("Rss", "Anonymous", "Pss"))
                + " MiB"
            )
            names = thread_names(pid)
            print(f"threads: {sum(names.values())}: " + ", ".join(f"{name} x{count}" for name, count in names.items()))
            for kind, (kib, count) in sorted(breakdown(pid).items(), key=lambda item: -item[1][0]):
                print(f"  {kind:<44} {kib / 1024:6.1f} MiB in {count} mapping(s)")
        finally:
            if daemon is not None and daemon.poll() is None:
                os.killpg(daemon.pid, signal.SIGTERM)
                daemon.wait(timeout=60)
            stack.tear_down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
