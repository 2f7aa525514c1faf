"""`make demo`: the example VBRPG service on 127.0.0.1:8000, seeded, with its health shown.

Everything lives under .demo/ (recreated on each run) in the layout config/demo.toml expects:
.demo/vbrpg/{alembic.ini, alembic/, data/vbrpg.db, data/backups/, run/}. Ctrl-C stops what it started.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
WORKDIR = DEMO / "vbrpg"
BIN = Path(sys.executable).parent
BASE_URL = "http://127.0.0.1:8000"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(*argv: str | Path, cwd: Path = WORKDIR) -> None:
    subprocess.run([str(part) for part in argv], cwd=cwd, check=True)  # noqa: S603 - fixed argv


def get(path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(BASE_URL + path, timeout=5) as response:  # noqa: S310 - fixed loopback URL
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def post(path: str, body: dict[str, object]) -> tuple[int, str]:
    request = urllib.request.Request(  # noqa: S310 - fixed loopback URL
        BASE_URL + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def port_in_use() -> bool:
    try:
        get("/health")
    except (urllib.error.URLError, OSError):
        return False
    return True


def set_up() -> None:
    if port_in_use():
        sys.exit(f"something already answers on {BASE_URL}: stop it (or an earlier demo) first")
    step(f"setting up the example VBRPG service in {WORKDIR}")
    shutil.rmtree(DEMO, ignore_errors=True)
    run(BIN / "vbrpg-example", "init-app", WORKDIR, "--db", WORKDIR / "data" / "vbrpg.db", cwd=REPO)
    (WORKDIR / "run").mkdir(parents=True, exist_ok=True)
    (WORKDIR / "data" / "backups").mkdir(parents=True, exist_ok=True)
    step("alembic upgrade head")
    run(BIN / "vbrpg-example", "migrate", "--db", "data/vbrpg.db", "--app-dir", ".")
    step("seeding rooms and players")
    run(
        BIN / "vbrpg-example",
        "seed",
        "--db",
        "data/vbrpg.db",
        "--rooms",
        "2000",
        "--players",
        "4000",
        "--participants-per-room",
        "3",
        "--agents-per-room",
        "1",
    )


def start_service() -> None:
    step(f"starting the service on {BASE_URL} (the control command in config/demo.toml)")
    run(
        BIN / "vbrpg-example",
        "serve",
        "--db",
        "data/vbrpg.db",
        "--app-dir",
        ".",
        "--port",
        "8000",
        "--detach",
        "--pidfile",
        "run/vbrpg.pid",
        "--log-file",
        "run/vbrpg.log",
    )
    status, body = post("/api/rooms", {"name": "Demo room", "host_name": "demo-host", "code": "DEMO01"})
    print(f"POST /api/rooms (code DEMO01): {status}")


def stop_service() -> None:
    subprocess.run(  # noqa: S603 - fixed argv
        [str(BIN / "vbrpg-example"), "stop", "--pidfile", "run/vbrpg.pid"], cwd=WORKDIR, check=False
    )


def main() -> int:
    set_up()
    start_service()
    try:
        status, body = get("/health")
        step(f"GET /health -> {status}")
        print(body)
        status, body = get("/api/rooms/DEMO01")
        print(f"GET /api/rooms/DEMO01 -> {status}")
        step("the service runs until Ctrl-C")
        _wait_for_interrupt()
    finally:
        step("stopping the service")
        stop_service()
    return 0


def _wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
