"""rollbackd's footprint with many services: N copies of the example service's database, one daemon, Monit beside.

Sets up the example service (seeded, on a free port) with tests/support/stack.py, copies its database N times
(SQLite's online backup), writes one rollbackd config whose N ``[[service]]`` blocks are the harness's block with
their own name and database (all probe the one HTTP service; ``dry_run`` so no action touches the shared
service), and runs bench/footprint.py on it (CPU and RSS of rollbackd and of Monit at its 1 s cycle).

    .venv/bin/python bench/footprint_services.py --services 50 --seconds 300
    .venv/bin/python bench/footprint_services.py --services 20 --every 1s --seconds 300
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.footprint import footprint_argv  # noqa: E402
from tests.support.stack import Stack  # noqa: E402


def many_services(config: str, count: int) -> str:
    """The harness's one-service config as ``count`` services named vbrpg-0.. on data/vbrpg-N.db."""
    head, block = config.split("[[service]]", 1)
    blocks = [
        "[[service]]"
        + block.replace('name = "vbrpg"', f'name = "vbrpg-{index}"', 1).replace(
            'database = "data/vbrpg.db"', f'database = "data/vbrpg-{index}.db"', 1
        )
        for index in range(count)
    ]
    return head + "".join(blocks)


def copy_database(source: Path, target: Path) -> None:
    with closing(sqlite3.connect(source)) as origin, closing(sqlite3.connect(target)) as copy:
        origin.backup(copy)
        copy.execute("PRAGMA journal_mode=WAL")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--every", help="every probe at this interval (default: the probes' default intervals)")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument(
        "--warmup", type=float, default=15, help="seconds before measuring (start-up backs up every database)"
    )
    parser.add_argument(
        "--rollbackd-command",
        default=f"{sys.executable} -m rollbackd",
        help="rollbackd's argv, shell-quoted (e.g. under `py-spy record ... --` to profile it)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollbackd-footprint-services-") as root:
        stack = Stack(Path(root), rooms=2000, players=4000, dry_run=True)
        try:
            stack.set_up()
            stack.probe_every = args.every
            stack.write_config()
            for index in range(args.services):
                copy_database(stack.database, stack.database.with_name(f"vbrpg-{index}.db"))
            config = stack.root / "rollbackd-many.toml"
            config.write_text(many_services(stack.config_path.read_text(), args.services))
            label = f"every probe at {args.every}" if args.every else "default intervals"
            print(f"\n### rollbackd, {args.services} services, {label}\n", flush=True)
            argv = footprint_argv(
                url=stack.base_url,
                database=stack.database,
                config=config,
                metrics_url=f"http://127.0.0.1:{stack.metrics_port}/metrics",
                seconds=args.seconds,
                warmup=args.warmup,
                rollbackd_command=args.rollbackd_command,
            )
            subprocess.run(argv, check=True)  # noqa: S603 - fixed argv
        finally:
            stack.tear_down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
