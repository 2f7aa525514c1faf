"""CPU a second of the daemon's self-load heartbeat (runtime/self_load.py: ``update`` and its metrics export, twice
a second) for N services of 7 probes each, in this process, on a stepped clock (nothing sleeps). Every probe ran
within its interval, as in a daemon keeping its cadence, so every staleness is 0.

    .venv/bin/python bench/self_load_cost.py --services 1
    .venv/bin/python bench/self_load_cost.py --services 50
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rollbackd.metrics import Metrics  # noqa: E402
from rollbackd.probes import PROBE_NAMES  # noqa: E402
from rollbackd.runtime.self_load import HEARTBEAT, HISTORY, SelfLoad  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--heartbeats", type=int, default=4000)
    args = parser.parse_args()
    now = [1000.0]
    load = SelfLoad(Metrics(), clock=lambda: now[0])
    keys = [(f"svc-{index}", probe) for index in range(args.services) for probe in PROBE_NAMES]
    for service, probe in keys:
        load.register(service, probe, 1.0)
    for index in range(int(HISTORY / HEARTBEAT)):  # a full lag history, as after two minutes of running
        load.note_lag(now[0] - HISTORY + index * HEARTBEAT, 0.001)
    spent = 0.0
    for _ in range(args.heartbeats):
        now[0] += HEARTBEAT
        for service, probe in keys:
            load.ran(service, probe)
        started = time.process_time()
        load.note_lag(now[0], 0.001)
        load.update(now[0])
        spent += time.process_time() - started
    per_heartbeat = spent / args.heartbeats
    print(
        f"{args.services} services x {len(PROBE_NAMES)} probes: {per_heartbeat * 1e6:.1f} us a heartbeat, "
        f"{per_heartbeat / HEARTBEAT * 1000:.3f} ms CPU a second"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
