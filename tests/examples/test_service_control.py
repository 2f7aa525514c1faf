"""Starting and stopping the service the way a "command"-kind service control does, and chaos injection."""

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.vbrpg_service import CLEAN_HEAD, ExampleService, free_port, process_gone, run_cli, running_service


def serve_detached(
    database: Path, app_dir: Path, pidfile: Path, port: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "serve",
        "--detach",
        "--db",
        database,
        "--app-dir",
        app_dir,
        "--port",
        port,
        "--pidfile",
        pidfile,
        *extra,
    )


def test_serve_detach_then_stop(database: Path, app_dir: Path, detached_pidfile: Path) -> None:
    port = free_port()

    started = serve_detached(database, app_dir, detached_pidfile, port)

    assert started.returncode == 0, started.stderr
    pid = int(detached_pidfile.read_text())
    health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
    assert health.json()["revision"] == CLEAN_HEAD
    assert health.headers["x-vbrpg-pid"] == str(pid)

    stopped = run_cli("stop", "--pidfile", detached_pidfile)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped pid {pid}" in stopped.stdout
    assert process_gone(pid)
    assert not detached_pidfile.exists()
    again = run_cli("stop", "--pidfile", detached_pidfile)
    assert again.returncode == 0
    assert "not running" in again.stdout


def test_restart_replaces_the_process(database: Path, app_dir: Path, detached_pidfile: Path) -> None:
    port = free_port()
    assert serve_detached(database, app_dir, detached_pidfile, port).returncode == 0
    first = int(detached_pidfile.read_text())

    restarted = run_cli(
        "restart", "--db", database, "--app-dir", app_dir, "--port", port, "--pidfile", detached_pidfile
    )

    assert restarted.returncode == 0, restarted.stderr
    second = int(detached_pidfile.read_text())
    assert second != first
    assert process_gone(first)
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).headers["x-vbrpg-pid"] == str(second)
    assert run_cli("stop", "--pidfile", detached_pidfile).returncode == 0


def test_detach_reports_a_service_that_cannot_start(database: Path, app_dir: Path, detached_pidfile: Path) -> None:
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        port = occupant.getsockname()[1]

        result = serve_detached(database, app_dir, detached_pidfile, port)

    assert result.returncode == 4
    assert "exited" in result.stderr
    assert "address already in use" in result.stderr.lower()
    assert not detached_pidfile.exists()


def test_a_missing_database_makes_health_503_not_a_new_file(tmp_path: Path, app_dir: Path) -> None:
    missing = tmp_path / "missing.db"

    with running_service(missing, app_dir, tmp_path / "service.log") as service:
        health = service.client().get("/health")

    assert health.status_code == 503
    assert "does not exist" in health.json()["reason"]
    assert not missing.exists()


def test_a_never_migrated_database_makes_health_503(tmp_path: Path, app_dir: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()

    with running_service(empty, app_dir, tmp_path / "service.log") as service:
        health = service.client().get("/health")

    assert health.status_code == 503
    assert "alembic_version" in health.json()["reason"]


def test_chaos_injects_503s_then_recovers(chaos_service: ExampleService) -> None:
    client = chaos_service.client()

    injected = client.post("/chaos", json={"health_503_count": 2})

    assert injected.status_code == 200
    assert [client.get("/health").status_code for _ in range(3)] == [503, 503, 200]


def test_chaos_slows_health_and_api_past_a_probe_timeout_until_cleared(chaos_service: ExampleService) -> None:
    client = chaos_service.client()
    client.post("/chaos", json={"health_delay_seconds": 1, "api_delay_seconds": 1})

    with pytest.raises(httpx.ReadTimeout):
        client.get("/health", timeout=0.2)
    with pytest.raises(httpx.ReadTimeout):
        client.get("/api/rooms/ABC123", timeout=0.2)

    cleared = client.delete("/chaos").json()
    assert cleared == {
        "health_503_count": 0,
        "health_delay_seconds": 0.0,
        "api_delay_seconds": 0.0,
        "health_degraded": False,
    }
    assert client.get("/health", timeout=5).status_code == 200
    assert client.get("/api/rooms/ABC123", timeout=5).status_code == 404


def test_chaos_is_off_unless_asked_for(service: ExampleService) -> None:
    client = service.client()

    assert client.post("/chaos", json={"health_503_count": 1}).status_code in (404, 405)
    assert client.get("/health").status_code == 200


def test_init_app_refuses_a_non_empty_directory_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "app"
    target.mkdir()
    (target / "keep.txt").write_text("mine")

    refused = run_cli("init-app", target)
    forced = run_cli("init-app", target, "--force")

    assert refused.returncode == 2
    assert "not empty" in refused.stderr
    assert forced.returncode == 0, forced.stderr
    assert (target / "alembic.ini").exists() and (target / "keep.txt").exists()


def test_console_script_is_installed() -> None:
    script = shutil.which("vbrpg-example") or str(Path(sys.executable).parent / "vbrpg-example")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30, check=False)

    assert result.returncode == 0
    assert "init-app" in result.stdout
