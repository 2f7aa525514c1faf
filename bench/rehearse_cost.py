"""What `rollbackd rehearse` costs on a realistic VBRPG database, against the bare `alembic upgrade` it rehearses.

Sets up an app dir with ``vbrpg-example`` (init-app, migrate, seed ``--rooms`` rooms with 5 seats each), drops two
migrations into its versions dir (a nullable column on ``game_rooms``; the example's ``drop-index`` fault, whose
downgrade recreates the index on every participant), and runs ``rollbackd rehearse --json`` ``--runs`` times.
Reported per run: the copy, the canary proof (total wall time minus the copy and the steps), and each Alembic step
with its checks; then, for scale, one bare ``alembic upgrade head`` + ``downgrade`` of the same revisions on a
plain ``cp`` of the database.

    .venv/bin/python bench/rehearse_cost.py [--rooms 200000] [--runs 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vbrpg_example.faults.catalog import FAULTS
from vbrpg_example.faults.migration_faults import render_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.deploy_app import CLEAN_REVISION, CLEAN_SCRIPT  # noqa: E402
from tests.support.vbrpg_service import CLEAN_HEAD  # noqa: E402

BIN = Path(sys.executable).parent


def run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, cwd=cwd, timeout=3600)
    if result.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(map(str, argv))} failed:\n{result.stdout}{result.stderr}")
    return result


def setup(root: Path, rooms: int) -> tuple[Path, Path]:
    app = root / "app"
    database = app / "data" / "vbrpg.db"
    run(BIN / "vbrpg-example", "init-app", app, "--db", database)
    database.parent.mkdir(parents=True, exist_ok=True)
    run(BIN / "vbrpg-example", "migrate", "--db", database, "--app-dir", app)
    seeded = run(
        BIN / "vbrpg-example", "seed", "--db", database, "--rooms", rooms, "--players", rooms,
        "--participants-per-room", 5,
    )  # fmt: skip
    print(seeded.stdout.strip().splitlines()[-1])
    versions = app / "alembic" / "versions"
    (versions / f"{CLEAN_REVISION}_add_room_description.py").write_text(CLEAN_SCRIPT)
    fault = next(fault for fault in FAULTS if fault.name == "drop-index")
    assert fault.script is not None
    (versions / fault.script).write_text(render_script(fault, CLEAN_REVISION))
    config = root / "rollbackd.toml"
    config.write_text(
        f"""
[daemon]
state_dir = "{root / "state"}"
metrics_listen = ""

[[service]]
name = "vbrpg"
workdir = "{app}"
database = "data/vbrpg.db"
base_url = "http://127.0.0.1:9"

[service.alembic]
command = ["{BIN / "alembic"}"]

[service.backups]
min_free_bytes = 0
min_free_ratio = 0.0
"""
    )
    return config, database


def bare_alembic(root: Path, database: Path) -> dict[str, float]:
    """upgrade head and downgrade back on a cp of the database, as a person rehearsing by hand would."""
    copy = root / "bare.db"
    started = time.monotonic()
    shutil.copyfile(database, copy)
    timings = {"cp": time.monotonic() - started}
    ini = database.parent.parent / "alembic.ini"
    for name, argv in (("upgrade head", ["upgrade", "head"]), ("downgrade", ["downgrade", CLEAN_HEAD])):
        started = time.monotonic()
        run(BIN / "alembic", "-c", ini, "-x", f"db={copy}", *argv, cwd=ini.parent)
        timings[name] = time.monotonic() - started
    copy.unlink()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="work in this dir and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="rehearse-cost-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        config, database = setup(root, args.rooms)
        print(f"database: {database.stat().st_size / 1024**2:.1f} MiB")
        runs = []
        for _ in range(args.runs):
            started = time.monotonic()
            result = run(sys.executable, "-m", "rollbackd", "--config", config, "rehearse", "--json")
            wall = time.monotonic() - started
            report = json.loads(result.stdout)
            assert report["ok"], report["summary"]
            steps = [step for revision in report["revisions"] for step in revision["steps"]]
            timings = {
                f"alembic {revision['revision'][:6]} {step['step']}": step["seconds"]
                for revision in report["revisions"]
                for step in revision["steps"]
            }
            checks = sum(step["checks"]["check_seconds"] for step in steps)
            rest = wall - report["copy"]["seconds"] - sum(timings.values()) - checks
            runs.append(
                {"total": wall, "copy (backup API, verified)": report["copy"]["seconds"], **timings}
                | {f"checks after the {len(steps)} steps": checks, "start-up, canary proof, cleanup": rest}
            )
        print(f"\nrehearse, median of {args.runs} runs")
        for key in runs[0]:
            print(f"  {key:<36} {statistics.median(run[key] for run in runs):6.2f} s")
        print("\nbare alembic on a cp (one run)")
        for key, value in bare_alembic(root, database).items():
            print(f"  {key:<36} {value:6.2f} s")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
