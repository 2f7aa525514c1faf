"""CPU of one integrity probe run when the database is unchanged (skipped) against a run that checks.

Builds the probes' example-shaped database (tests/probes/game_database.py) in a temp dir and runs
``IntegrityProbe.check()`` in a loop, once letting the unchanged-database skip work and once forgetting the last
passing stamp before each run (so ``quick_check`` + ``foreign_key_check`` run every time).

    .venv/bin/python bench/integrity_skip_cost.py --rooms 4000 --runs 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    from tests.probes.game_database import make_game_database
    from tests.probes.probe_support import service_config

    from rollbackd.host.http_client import HttpClient
    from rollbackd.probes import ProbeContext
    from rollbackd.probes.integrity import IntegrityProbe
    from rollbackd.state.state_dir import StateDir

    with tempfile.TemporaryDirectory(prefix="rollbackd-integrity-skip-") as root:
        folder = Path(root)
        database = make_game_database(folder / "vbrpg.db", rooms=args.rooms)
        extra = '[service.probes.integrity]\nquick_every = "1s"\nfull_every = "1h"'
        config = service_config(folder, database=database, extra=extra)
        probe = IntegrityProbe(config, ProbeContext(http=HttpClient(), state_dir=StateDir(folder / "state")))
        probe.check()  # the first run is the full check
        print(f"database {database.stat().st_size / 1024:.0f} KiB, {args.runs} runs each")
        for label, forget in (("unchanged (skipped)", False), ("checked every run", True)):
            kinds = set()
            started = time.process_time()
            for _ in range(args.runs):
                if forget:
                    probe._passed = None  # noqa: SLF001 - the bench's way to defeat the skip
                kinds.add(str(probe.check().detail["check"]))
            per_run = (time.process_time() - started) / args.runs * 1000
            print(f"{label:<22} {per_run:7.2f} ms CPU per run   checks: {', '.join(sorted(kinds))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
