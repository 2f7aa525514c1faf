"""Run bench/footprint.py against the example service with rollbackd at its default intervals and at 1 s.

Sets up the example service (seeded, on a free port) with tests/support/stack.py, writes the two rollbackd configs
next to it, and runs the footprint comparison (rollbackd and Monit side by side) once per config.

    .venv/bin/python bench/footprint_stack.py --seconds 600
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.footprint import footprint_argv  # noqa: E402
from tests.support.stack import Stack  # noqa: E402

WARMUP = 15.0  # bench/footprint.py's default: both tools started before measuring


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument(
        "--rollbackd-command",
        default=f"{sys.executable} -m rollbackd",
        help="rollbackd's argv, shell-quoted (e.g. under `py-spy record ... --` to profile it)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollbackd-footprint-") as root:
        stack = Stack(Path(root), rooms=2000, players=4000)
        try:
            stack.set_up()
            for label, every in (("default intervals", None), ("1 s intervals", "1s")):
                stack.probe_every = every
                stack.write_config()
                print(f"\n### rollbackd at {label}\n", flush=True)
                argv = footprint_argv(
                    url=stack.base_url,
                    database=stack.database,
                    config=stack.config_path,
                    metrics_url=f"http://127.0.0.1:{stack.metrics_port}/metrics",
                    seconds=args.seconds,
                    warmup=WARMUP,
                    rollbackd_command=args.rollbackd_command,
                )
                subprocess.run(argv, check=True)  # noqa: S603 - fixed argv
        finally:
            stack.tear_down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
