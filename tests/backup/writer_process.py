"""A service-like writer for backup tests: inserts players with ids 1, 2, 3, ... one row per transaction.

Run as a separate process (as the real service is). Stops on SIGTERM and prints a JSON report: rows inserted,
errors seen, worst insert latency. Any error is a test failure (the backup must never make the writer fail).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import time

stopping = False


def stop(signum: int, frame: object) -> None:
    global stopping
    stopping = True


def main() -> int:
    database, interval = sys.argv[1], float(sys.argv[2])
    signal.signal(signal.SIGTERM, stop)
    connection = sqlite3.connect(database, timeout=30, isolation_level=None)
    next_id = int(connection.execute("SELECT coalesce(max(id), 0) FROM players").fetchone()[0]) + 1
    inserted, errors, worst = 0, [], 0.0
    while not stopping:
        started = time.perf_counter()
        try:
            connection.execute("INSERT INTO players (id, name) VALUES (?, ?)", (next_id, f"writer-{next_id}"))
        except sqlite3.Error as error:
            errors.append(str(error))
            break
        worst = max(worst, time.perf_counter() - started)
        next_id += 1
        inserted += 1
        if interval:
            time.sleep(interval)
    connection.close()
    print(json.dumps({"inserted": inserted, "errors": errors, "worst_latency": worst, "last_id": next_id - 1}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
