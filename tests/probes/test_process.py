"""The service's main process, found by pidfile, command-line match or systemd's MainPID, and watched with psutil."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollbackd.metrics import Metrics
from rollbackd.probes import ProbeContext, build_probes
from rollbackd.probes.process import ProcessProbe, parse_main_pid
from tests.probes.probe_support import run_once, service_config


@pytest.fixture
def service_process(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    marker = f"vbrpg-test-service-{os.getpid()}-{tmp_path.name}"
    process = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(120)", marker])
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def process_probe(tmp_path: Path, context: ProbeContext, extra: str) -> ProcessProbe:
    return ProcessProbe(service_config(tmp_path, database=tmp_path / "vbrpg.db", extra=extra), context)


def test_pidfile_process_is_up_then_reported_not_running_after_kill(
    tmp_path: Path, context: ProbeContext, service_process: subprocess.Popen[bytes]
) -> None:
    pidfile = tmp_path / "vbrpg.pid"
    pidfile.write_text(f"{service_process.pid}\n")
    probe = process_probe(tmp_path, context, f'[service.probes.process]\npidfile = "{pidfile}"')
    up = run_once(probe)
    service_process.send_signal(signal.SIGKILL)
    service_process.wait()
    down = run_once(probe)
    assert up.ok, up
    assert up.values["up"] == 1
    assert up.values["pid"] == service_process.pid
    assert up.values["rss_bytes"] > 0
    assert up.values["open_fds"] >= 3
    assert up.detail["source"] == "pidfile"
    assert not down.ok
    assert down.reason == "not_running"
    assert down.values["up"] == 0


def test_missing_pidfile_is_no_pid(tmp_path: Path, context: ProbeContext) -> None:
    probe = process_probe(tmp_path, context, f'[service.probes.process]\npidfile = "{tmp_path / "none.pid"}"')
    observation = run_once(probe)
    assert (observation.ok, observation.reason) == (False, "no_pid")
    assert "cannot read" in observation.detail["error"]


def test_garbage_pidfile_is_no_pid(tmp_path: Path, context: ProbeContext) -> None:
    pidfile = tmp_path / "vbrpg.pid"
    pidfile.write_text("not a pid\n")
    observation = run_once(process_probe(tmp_path, context, f'[service.probes.process]\npidfile = "{pidfile}"'))
    assert (observation.ok, observation.reason) == (False, "no_pid")


def test_exited_but_unreaped_process_is_a_zombie(tmp_path: Path, context: ProbeContext) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped: a zombie
        pidfile = tmp_path / "vbrpg.pid"
        pidfile.write_text(str(child.pid))
        observation = run_once(process_probe(tmp_path, context, f'[service.probes.process]\npidfile = "{pidfile}"'))
    finally:
        child.wait()
    assert (observation.ok, observation.reason) == (False, "zombie")


def test_process_found_by_command_line_match(
    tmp_path: Path, context: ProbeContext, service_process: subprocess.Popen[bytes]
) -> None:
    marker = f"vbrpg-test-service-{os.getpid()}-{tmp_path.name}"
    probe = process_probe(tmp_path, context, f'[service.probes.process]\nmatch = ["time.sleep", "{marker}"]')
    observation = run_once(probe)
    assert observation.ok
    assert observation.detail == {**observation.detail, "pid": service_process.pid, "source": "match"}
    metrics = Metrics()
    probe.export(metrics, observation)
    assert metrics.registry.get_sample_value("rollbackd_service_process_up", {"service": "vbrpg"}) == 1


def test_no_match_is_no_pid(tmp_path: Path, context: ProbeContext) -> None:
    probe = process_probe(tmp_path, context, '[service.probes.process]\nmatch = ["no-such-service-anywhere-4711"]')
    assert run_once(probe).reason == "no_pid"


def test_systemctl_show_main_pid_output_is_parsed() -> None:
    assert parse_main_pid("4711\n") == 4711
    assert parse_main_pid("0\n") is None  # the unit has no running main process
    assert parse_main_pid("") is None


def test_systemd_unit_main_pid_is_asked_of_systemctl(
    tmp_path: Path, context: ProbeContext, service_process: subprocess.Popen[bytes]
) -> None:
    # PID 1 is not systemd on this machine, so a stand-in systemctl answers `show -p MainPID --value UNIT`;
    # the probe's own part (argv, parsing, psutil) is real.
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(
        f'#!/bin/sh\n[ "$*" = "show -p MainPID --value vbrpg-backend.service" ] && echo {service_process.pid}\n'
    )
    systemctl.chmod(0o755)
    config = service_config(
        tmp_path, database=tmp_path / "vbrpg.db", extra='[service.control]\nkind = "systemd"\nunit = "vbrpg-backend"'
    )
    observation = run_once(ProcessProbe(config, context, systemctl=str(systemctl)))
    assert observation.ok, observation
    assert observation.detail["source"] == "systemd"
    assert observation.values["pid"] == service_process.pid


def test_process_probe_without_a_pid_source_is_not_built(tmp_path: Path, context: ProbeContext) -> None:
    names = [probe.name for probe in build_probes(service_config(tmp_path, database=tmp_path / "x.db"), context)]
    assert "process" not in names
    assert "latency" not in names  # no paths configured either
    assert names == ["health", "sqlite_lock", "integrity", "schema", "rows"]


def test_a_new_pid_written_into_the_pidfile_is_read_at_the_next_run(
    tmp_path: Path, context: ProbeContext, service_process: subprocess.Popen[bytes]
) -> None:
    """The pidfile is read again only when its stat changes: a restarted service's pid, written in place (same
    inode) or renamed into place (a new inode, the old size and mtime kept), is seen at the next run."""
    pidfile = tmp_path / "vbrpg.pid"
    pidfile.write_text(f"{service_process.pid}\n")
    probe = process_probe(tmp_path, context, f'[service.probes.process]\npidfile = "{pidfile}"')
    first, again = run_once(probe), run_once(probe)
    assert (first.values["pid"], again.values["pid"]) == (service_process.pid, service_process.pid)
    assert (again.ok, again.detail["source"]) == (True, "pidfile")
    restarted = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        pidfile.write_text(f"{restarted.pid}\n")  # in place: the same inode
        assert run_once(probe).values["pid"] == restarted.pid
        before = os.stat(pidfile)
        incoming = tmp_path / "vbrpg.pid.new"
        incoming.write_text(f"{service_process.pid}\n".rjust(len(f"{restarted.pid}\n"), "0"))
        os.utime(incoming, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(incoming, pidfile)  # a new inode, same size and mtime
        assert run_once(probe).values["pid"] == service_process.pid
    finally:
        restarted.kill()
        restarted.wait()
