"""Service control: command argv against the real example service; systemd and docker compose argv exactly
(systemd cannot run here: PID 1 is not systemd)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from rollbackd.config.model import ServiceConfig, parse_config
from rollbackd.target.control import ControlError, ControlUnavailable, ServiceControl
from tests.support.vbrpg_service import free_port

BIN = Path(sys.executable).parent


def service_with(tmp_path: Path, control: str) -> ServiceConfig:
    workdir = tmp_path / "app"
    workdir.mkdir(exist_ok=True)
    text = f"""
[[service]]
name = "vbrpg"
workdir = "{workdir}"
database = "data/vbrpg.db"
base_url = "http://127.0.0.1:8000"
[service.control]
{control}
"""
    return parse_config(text, tmp_path / "rollbackd.toml").service[0]


def recorder(tmp_path: Path, name: str, fail_on: str = "") -> tuple[Path, Path]:
    """An executable that records its argv and cwd as JSON lines (and exits 5 when an argument is ``fail_on``)."""
    log = tmp_path / f"{name}.jsonl"
    program = tmp_path / "bin" / name
    program.parent.mkdir(exist_ok=True)
    program.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(log)!r}, 'a') as handle:\n"
        "    handle.write(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd()}) + '\\n')\n"
        f"if {fail_on!r} and {fail_on!r} in sys.argv: print('Failed to stop unit: Access denied'); sys.exit(5)\n"
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program, log


def calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# systemctl cannot run here (PID 1 is not systemd), so the systemd kind is tested against a recorder standing in
# for systemctl: what matters is the exact argv rollbackd hands to it.
def test_systemd_kind_runs_the_exact_systemctl_argv(tmp_path: Path) -> None:
    fake, log = recorder(tmp_path, "systemctl")
    control = ServiceControl(service_with(tmp_path, 'kind = "systemd"\nunit = "vbrpg-backend"'), systemctl=str(fake))
    control.stop()
    control.start()
    control.restart()
    assert [call["argv"] for call in calls(log)] == [
        ["stop", "vbrpg-backend.service"],
        ["start", "vbrpg-backend.service"],
        ["restart", "vbrpg-backend.service"],
    ]
    assert calls(log)[0]["cwd"] == str(tmp_path / "app")
    user = ServiceControl(
        service_with(tmp_path, 'kind = "systemd"\nunit = "vbrpg.service"\nuser = true'), systemctl=str(fake)
    )
    assert user.plan("stop").argvs == ((str(fake), "--user", "stop", "vbrpg.service"),)


def test_systemd_failure_is_a_clear_control_error(tmp_path: Path) -> None:
    fake, _ = recorder(tmp_path, "systemctl", fail_on="stop")
    control = ServiceControl(service_with(tmp_path, 'kind = "systemd"\nunit = "vbrpg-backend"'), systemctl=str(fake))
    with pytest.raises(ControlError, match="cannot stop service 'vbrpg'.*exit 5.*Access denied") as caught:
        control.stop()
    assert caught.value.result is not None and caught.value.result.exit_code == 5


# The exact argv with several compose files, cheaply through a recorder; compose itself runs for real (a private
# dockerd) in tests/e2e/test_code_rollback_compose.py.
def test_docker_compose_kind_runs_the_exact_compose_argv_in_the_project_dir(tmp_path: Path) -> None:
    fake, log = recorder(tmp_path, "docker")
    project = tmp_path / "deploy"
    project.mkdir()
    control_toml = (
        f'kind = "docker-compose"\nservice = "backend"\nproject_dir = "{project}"\n'
        f'files = ["compose.yml", "compose.prod.yml"]\ncommand = ["{fake}", "compose"]'
    )
    control = ServiceControl(service_with(tmp_path, control_toml))
    control.stop()
    control.start()
    control.restart()
    prefix = ["compose", "--project-directory", str(project), "-f", str(project / "compose.yml")]
    prefix += ["-f", str(project / "compose.prod.yml")]
    assert [call["argv"] for call in calls(log)] == [
        [*prefix, "stop", "backend"],
        [*prefix, "up", "-d", "backend"],
        [*prefix, "restart", "backend"],
    ]
    assert {call["cwd"] for call in calls(log)} == {str(project)}


def test_kind_none_cannot_act_and_says_why(tmp_path: Path) -> None:
    control = ServiceControl(service_with(tmp_path, 'kind = "none"'))
    assert not control.can_act
    with pytest.raises(ControlUnavailable, match="control kind 'none'"):
        control.stop()


def test_a_command_that_hangs_is_killed_at_the_timeout(tmp_path: Path) -> None:
    control = ServiceControl(
        service_with(tmp_path, 'kind = "command"\nstart = ["sleep", "30"]\nstop = ["true"]\ntimeout = "500ms"')
    )
    with pytest.raises(ControlError, match="timed out"):
        control.start()


def pid_in(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


@pytest.mark.e2e
def test_command_kind_starts_stops_and_restarts_the_real_example_service(tmp_path: Path) -> None:
    example = BIN / "vbrpg-example"
    if not example.exists():
        pytest.fail("vbrpg-example is not installed: pip install -e examples/vbrpg")
    app, database, pidfile, port = tmp_path / "app", tmp_path / "app/data/vbrpg.db", tmp_path / "vbrpg.pid", free_port()
    subprocess.run([example, "init-app", str(app), "--db", str(database)], check=True, capture_output=True)
    database.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([example, "migrate", "--db", str(database), "--app-dir", str(app)], check=True, capture_output=True)
    start = [str(example), "serve", "--db", "data/vbrpg.db", "--app-dir", ".", "--port", str(port), "--detach",
             "--pidfile", str(pidfile)]  # fmt: skip
    stop = [str(example), "stop", "--pidfile", str(pidfile)]
    control = ServiceControl(
        service_with(tmp_path, f'kind = "command"\nstart = {json.dumps(start)}\nstop = {json.dumps(stop)}')
    )
    url = f"http://127.0.0.1:{port}/health"
    try:
        control.start()  # relative --db and --app-dir: the command runs in the service's workdir
        first = pid_in(pidfile)
        assert first is not None
        assert httpx.get(url, timeout=10).json()["status"] == "ok"
        asyncio.run(control.run_async("restart"))  # no restart argv configured: stop, then start
        second = pid_in(pidfile)
        assert second is not None and second != first
        assert httpx.get(url, timeout=10).status_code == 200
        control.stop()
        assert pid_in(pidfile) is None
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=2)
    finally:
        subprocess.run(stop, capture_output=True, check=False)
