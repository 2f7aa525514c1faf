"""`make demo`: the runbook's Scenario 3 (data loss after a migration) recovered hands-off, while you watch.

1. Sets up the example VBRPG service under .demo/vbrpg (recreated each run) in the layout config/demo.toml
   expects, migrates and seeds it, and starts it on 127.0.0.1:8000 (the command config/demo.toml uses).
2. Starts `rollbackd run` with config/demo.toml and shows its status as it watches.
3. Deploys a bad migration (`vbrpg-example fault data-loss`: it deletes every room) and prints, once a second,
   what rollbackd sees and does: detection, stop, restore of the pre-deploy backup with the bad file kept,
   verification, the revision blocked.
4. Ends with `rollbackd history` and the metrics URL; Ctrl-C stops everything it started (without a terminal
   it stops by itself), also when its output goes to a pipe whose reader is gone by then (`| tee`, `| head`).

With ``--replication`` (``make demo-replication``) rollbackd also replicates the database with Litestream to
.demo/offsite (a ``file`` replica; config/demo.toml plus a [service.replication] table, written to .demo/), and
a scene comes before the bad migration: a room is written, a buggy write breaks the foreign keys seconds later,
and rollbackd restores the replica to the last moment the database was proven good: the room survives, which
the 5-minute local backup could not have kept. (The data-loss restore then comes from the replica too, at the
moment the deploy began.)


Ports 8000 and 9797 taken? ``DEMO_PORT=8100 DEMO_METRICS_PORT=9897 make demo`` runs it with a copy of
config/demo.toml at .demo/demo.toml naming those ports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
WORKDIR = DEMO / "vbrpg"
SHIPPED_CONFIG = REPO / "config" / "demo.toml"
BIN = Path(sys.executable).parent
PORT = int(os.environ.get("DEMO_PORT", "8000"))
METRICS_PORT = int(os.environ.get("DEMO_METRICS_PORT", "9797"))
CONFIG = SHIPPED_CONFIG if (PORT, METRICS_PORT) == (8000, 9797) else DEMO / "demo.toml"
BASE_URL = f"http://127.0.0.1:{PORT}"
METRICS_URL = f"http://127.0.0.1:{METRICS_PORT}/metrics"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def write_config() -> None:
    """config/demo.toml with other ports, beside the demo's files (its relative paths adjusted to .demo/)."""
    if CONFIG == SHIPPED_CONFIG:
        return
    text = SHIPPED_CONFIG.read_text()
    text = text.replace("../.demo/", "").replace("127.0.0.1:9797", f"127.0.0.1:{METRICS_PORT}")
    text = text.replace("127.0.0.1:8000", f"127.0.0.1:{PORT}").replace('"--port", "8000"', f'"--port", "{PORT}"')
    CONFIG.write_text(text)


def detach_stdout() -> None:
    """stdout's reader is gone (the pipe closed, as `| head` or a Ctrl-C'd `| tee` does): what is still printed
    goes to /dev/null, so neither the clean-up nor the interpreter's exit dies of BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def run(*argv: str | Path, cwd: Path = WORKDIR, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv
        [str(part) for part in argv], cwd=cwd, check=check, text=True, capture_output=True
    )


def show(result: subprocess.CompletedProcess[str], lines: int = 6) -> None:
    for line in (result.stdout + result.stderr).strip().splitlines()[-lines:]:
        print(f"    {line}")


def rollbackd(*argv: str) -> subprocess.CompletedProcess[str]:
    return run(BIN / "rollbackd", "--config", CONFIG, *argv, cwd=REPO, check=False)


REPLICATION = """
[service.replication]
sync_interval = "500ms"
drill_every = "0s"

[[service.replication.replicas]]
type = "file"
path = "../offsite"
"""


def use_replication() -> None:
    """config/demo.toml with replication, written to .demo/ (its paths moved from config/ to .demo/)."""
    global CONFIG
    text = CONFIG.read_text().replace('"../.demo/', '"')
    # [service.replication] must follow the service's own keys: put it before the first [[service.rules]] or at
    # the end.
    marker = "\n[[service.rules]]"
    text = text.replace(marker, REPLICATION + marker, 1) if marker in text else text + REPLICATION
    CONFIG = DEMO / "rollbackd-replication.toml"
    CONFIG.write_text(text)


def http(method: str, path: str, body: dict[str, object] | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - fixed loopback URL
        BASE_URL + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except (urllib.error.URLError, OSError) as error:
        return 0, str(error)


def set_up() -> None:
    if http("GET", "/health")[0]:
        sys.exit(f"something already answers on {BASE_URL}: stop it (or an earlier demo) first")
    step(f"setting up the example VBRPG service in {WORKDIR.relative_to(REPO)}")
    shutil.rmtree(DEMO, ignore_errors=True)
    (WORKDIR / "data").mkdir(parents=True)
    write_config()
    run(BIN / "vbrpg-example", "init-app", WORKDIR, "--db", WORKDIR / "data" / "vbrpg.db", "--force", cwd=REPO)
    (WORKDIR / "run").mkdir()
    run(BIN / "vbrpg-example", "migrate", "--db", "data/vbrpg.db", "--app-dir", ".")
    print("    alembic upgrade head: e6093b7a4c18")
    show(run(BIN / "vbrpg-example", "seed", "--db", "data/vbrpg.db", "--rooms", "2000", "--players", "4000",
             "--participants-per-room", "3", "--agents-per-room", "1"), 1)  # fmt: skip


def start_service() -> None:
    step(f"starting the service on {BASE_URL} (the start command in {CONFIG.relative_to(REPO)})")
    show(run(BIN / "vbrpg-example", "serve", "--db", "data/vbrpg.db", "--app-dir", ".", "--port", str(PORT),
             "--detach", "--pidfile", "run/vbrpg.pid", "--log-file", "run/vbrpg.log"), 1)  # fmt: skip
    http("POST", "/api/rooms", {"name": "Demo room", "host_name": "demo-host", "code": "DEMO01"})
    print(f"    GET /health -> {' '.join(map(str, http('GET', '/health')))}")


def start_rollbackd() -> subprocess.Popen[bytes]:
    step(f"starting rollbackd run --config {CONFIG.relative_to(REPO)} (log: .demo/rollbackd.log)")
    log = (DEMO / "rollbackd.log").open("ab")
    try:
        daemon = subprocess.Popen(  # noqa: S603 - fixed argv
            [str(BIN / "rollbackd"), "--config", str(CONFIG), "run"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = status_json()
        if status and status["daemon"]["ready"] and status["services"]["vbrpg"].get("last_backup"):
            return daemon
        if daemon.poll() is not None:
            sys.exit(f"rollbackd exited with {daemon.returncode}; see .demo/rollbackd.log")
        time.sleep(0.5)
    sys.exit("rollbackd did not get ready in 60 s; see .demo/rollbackd.log")


def status_json() -> dict[str, Any] | None:
    result = rollbackd("status", "--json")
    with contextlib.suppress(ValueError):
        data = json.loads(result.stdout)
        return data if data.get("daemon") else None
    return None


def rows() -> str:
    result = run(sys.executable, "-c", ROWS_SCRIPT, WORKDIR / "data" / "vbrpg.db", check=False)
    return result.stdout.strip() or "unreadable"


ROWS_SCRIPT = """
import sqlite3, sys
connection = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=2)
print(", ".join(f"{table} {connection.execute(f'SELECT count(*) FROM {table}').fetchone()[0]}"
                for table in ("game_rooms", "players")))
"""


def live_line(status: dict[str, Any] | None) -> str:
    if status is None:
        return "rollbackd: (no answer)"
    service = status["services"]["vbrpg"]
    policy = service["policy"]
    failing = [f"{probe}:{result['reason']}" for probe, result in service.get("probes", {}).items() if not result["ok"]]
    health = http("GET", "/health")[0]
    return (
        f"state {policy['state'].upper():<10} health {health or 'down':<4} revision {service.get('revision')}  "
        f"rows: {rows()}  failing: {', '.join(failing) or 'none'}"
    )


def watch(seconds: float, until: str | None = None) -> None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        status = status_json()
        print(f"    [{time.strftime('%H:%M:%S')}] {live_line(status)}", flush=True)
        incidents = (status or {}).get("services", {}).get("vbrpg", {}).get("incidents", [])
        if until and any(incident["outcome"] == until for incident in incidents):
            return
        time.sleep(1.0)


def stop(daemon: subprocess.Popen[bytes] | None) -> None:
    """Stop what the demo started, first, whatever stdout does; only then say so."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
    if daemon is not None and daemon.poll() is None:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
    stopped = run(BIN / "vbrpg-example", "stop", "--pidfile", "run/vbrpg.pid", check=False)
    try:
        step("stopped rollbackd and the service")
        show(stopped, 1)
    except BrokenPipeError:
        detach_stdout()


def replication_scene() -> None:
    step("replication: a room is written, and seconds later a buggy write breaks the foreign keys")
    code = "REPL01"
    http("POST", "/api/rooms", {"name": "Seconds before the fault", "host_name": "late-host", "code": code})
    print(f"    POST /api/rooms {code}: written after the last local backup; Litestream ships it within 0.5 s")
    time.sleep(6)  # past the next passing integrity check (every 5 s in config/demo.toml)
    with contextlib.closing(sqlite3.connect(WORKDIR / "data" / "vbrpg.db", isolation_level=None)) as connection:
        connection.execute("INSERT INTO game_room_participants (room_id, player_id) VALUES (999999, 1)")
    print("    INSERT INTO game_room_participants (room_id = 999999): a seat in a room that does not exist")
    step("rollbackd restores the replica to the last moment the database was proven good")
    before = len((status_json() or {}).get("services", {}).get("vbrpg", {}).get("incidents", []))
    started = time.monotonic()
    while time.monotonic() - started < 90:
        status = status_json()
        print(f"    [{time.strftime('%H:%M:%S')}] {live_line(status)}", flush=True)
        incidents = (status or {}).get("services", {}).get("vbrpg", {}).get("incidents", [])
        if len(incidents) > before and incidents[0]["outcome"] not in ("open",):
            break
        time.sleep(1.0)
    show_replica_restore()
    status_code = http("GET", f"/api/rooms/{code}")[0]
    print(f"    GET /api/rooms/{code} -> {status_code} (the room written seconds before the fault is still there)")


def show_replica_restore() -> None:
    from rollbackd.config.model import load_config  # noqa: PLC0415 - only this scene needs them
    from rollbackd.state.history import History  # noqa: PLC0415
    from rollbackd.state.state_dir import StateDir  # noqa: PLC0415

    history = History(StateDir(load_config(CONFIG).daemon.state_dir).history_db)
    try:
        [incident] = history.incidents("vbrpg", limit=1)
        for action in history.incident(incident.id).actions:
            detail = action.detail
            print(f"    incident {incident.id} ({incident.rule}): {action.action} {action.outcome}")
            print(f"      source {detail.get('source')}, point {detail.get('point')} ({detail.get('point_basis')})")
            print(f"      rows lost (estimate): {detail.get('rows_lost_estimate')}")
            if detail.get("replica_refused"):
                print(f"      the replica could not be used: {detail['replica_refused']}")
    finally:
        history.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="The rollbackd demo (see the module docstring).")
    parser.add_argument(
        "--replication", action="store_true", help="replicate with Litestream and show a point-in-time restore"
    )
    args = parser.parse_args()
    set_up()
    if args.replication:
        use_replication()
    daemon = None
    try:
        start_service()
        daemon = start_rollbackd()
        print(rollbackd("status").stdout)
        step("watching a healthy service for a few seconds")
        watch(4)
        if args.replication:  # before the deploy: outside a deploy window the fault goes to the proven-good moment
            replication_scene()
        step("deploying a bad migration: 8e4b6c2d0a91_purge_stale_rooms.py ('-30 days' written as '+30 days')")
        show(run(BIN / "vbrpg-example", "fault", "data-loss", "--db", "data/vbrpg.db", "--app-dir", ".", check=False))
        step("rollbackd detects the data loss, stops the service, restores the pre-deploy backup, verifies")
        watch(60, until="recovered")
        watch(3)
        step("rollbackd history (the runbook's Rollback History table)")
        print(rollbackd("history", "--markdown").stdout)
        print(rollbackd("status").stdout)
        kept = sorted(path.name for path in (WORKDIR / "data").glob("vbrpg_corrupted_*"))
        print(f"\nthe bad database is kept, as the runbook says: {', '.join(kept) or 'none'}")
        print(f"metrics: {METRICS_URL}   (e.g. curl -s {METRICS_URL} | grep rollbackd_recovery)")
        if sys.stdin.isatty():
            step("rollbackd keeps watching; press Ctrl-C to stop everything")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        detach_stdout()
    finally:
        stop(daemon)
    return 0


if __name__ == "__main__":
    sys.exit(main())
