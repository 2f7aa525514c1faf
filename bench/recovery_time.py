"""Fault-to-verified-recovery time for the runbook's Scenario 3 (data loss after a migration) and a killed service.

Each run builds a fresh stack (tests/support/stack.py): the example service seeded to about 100 MB, `rollbackd run`
with every probe at a 1 s interval and the built-in rules at their default durations, then injects the fault and
reads the incident from the state DB. Reported: detection (fault command started → incident opened), recovery
(incident opened → verified) and the total from the start of the fault command (for data loss that includes
Alembic starting up and running the bad migration, about 1 s) to the verified recovery.

    .venv/bin/python bench/recovery_time.py --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.stack import running_stack  # noqa: E402

SIZE = {"rooms": 250_000, "players": 125_000, "participants_per_room": 4}


def one_run(scenario: str) -> tuple[float, float, float]:
    with (
        tempfile.TemporaryDirectory(prefix="rollbackd-bench-") as root,
        running_stack(Path(root), probe_every="1s", fast_rules=False, **SIZE) as stack,
    ):
        rule = {"data-loss": "data-loss", "kill": "process-down"}[scenario]
        started = time.time()
        result = stack.fault(scenario)
        if result.returncode != 0:
            raise RuntimeError(result.stdout + result.stderr)
        incident = stack.settled_incident(rule, timeout=180)
        if incident.outcome != "recovered" or incident.closed_at is None:
            raise RuntimeError(f"{scenario}: {incident.outcome}: {incident.notes}")
        return incident.opened_at - started, incident.closed_at - incident.opened_at, incident.closed_at - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenario", choices=("data-loss", "kill"), action="append")
    args = parser.parse_args()
    print("| scenario | runs | detect (median) | act + verify (median) | fault → verified (median, min–max) |")
    print("|---|---|---|---|---|")
    for scenario in args.scenario or ["data-loss", "kill"]:
        results = [one_run(scenario) for _ in range(args.runs)]
        detect = statistics.median(r[0] for r in results)
        act = statistics.median(r[1] for r in results)
        totals = [r[2] for r in results]
        print(
            f"| {scenario} | {args.runs} | {detect:.2f} s | {act:.2f} s | {statistics.median(totals):.2f} s "
            f"({min(totals):.2f}–{max(totals):.2f}) |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
