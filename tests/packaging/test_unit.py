"""systemd/rollbackd.service: valid, as hardened as recorded, and consistent with the config it runs.

PID 1 is not systemd here, so the unit is never started: `systemd-analyze verify` and `security --offline=yes`
read the file, and MemoryDenyWriteExecute= is exercised through the kernel's equivalent (PR_SET_MDWE).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rollbackd.config.model import DaemonConfig, load_config

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd/rollbackd.service"
EXAMPLE_DROP_IN = REPO / "systemd/examples/vbrpg.conf"  # packaged in /usr/share/doc/rollbackd/examples
EXPOSURE_RECORDED = 1.3  # README "Operations" and the report; lower it here when the unit gets stricter

needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")


def unit_settings(path: Path = UNIT) -> dict[str, list[str]]:
    """``Section.Key`` → every value it is given (systemd allows repeated keys), comments dropped."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min|m)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] in ("min", "m") else 1)


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # /usr/bin/rollbackd exists only once the package is installed (tests/packaging/test_deb.py verifies the
    # installed unit); here ExecStart points at this checkout's entry point instead.
    entry_point = Path(sys.executable).with_name("rollbackd")
    assert entry_point.exists()
    copy = tmp_path / "rollbackd.service"
    copy.write_text(UNIT.read_text().replace("/usr/bin/rollbackd", str(entry_point)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_security_exposure_is_no_worse_than_recorded() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for rollbackd\.service: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= EXPOSURE_RECORDED


def test_unit_is_a_notify_service_with_watchdog_run_as_its_own_user() -> None:
    settings = unit_settings()
    assert settings["Service.Type"] == ["notify"]
    assert settings["Service.NotifyAccess"] == ["main"]
    assert settings["Service.ExecStart"] == ["/usr/bin/rollbackd --config /etc/rollbackd/rollbackd.toml run"]
    assert settings["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert seconds(settings["Service.WatchdogSec"][0]) >= 10
    assert settings["Service.Restart"] == ["on-failure"]
    assert settings["Service.User"] == settings["Service.Group"] == ["rollbackd"]
    assert settings["Service.StateDirectory"] == ["rollbackd"]
    assert settings["Service.StateDirectoryMode"] == ["0700"]
    assert settings["Service.KillMode"] == ["mixed"]  # SIGTERM to rollbackd only; it lets alembic finish


def test_stop_timeout_leaves_room_for_the_daemons_own_shutdown_timeout() -> None:
    stop_timeout = seconds(unit_settings()["Service.TimeoutStopSec"][0])
    shipped = load_config(REPO / "config/rollbackd.toml")
    assert stop_timeout > shipped.daemon.shutdown_timeout
    assert stop_timeout > DaemonConfig().shutdown_timeout


def test_the_unit_names_no_service_and_the_example_drop_in_gives_the_shipped_configs_data_dir() -> None:
    # Generic: another service is added by a drop-in of its own, never by editing the unit.
    settings = unit_settings()
    assert settings["Service.ProtectSystem"] == ["strict"]
    assert "Service.ReadWritePaths" not in settings
    assert "Service.SupplementaryGroups" not in settings
    assert "vbrpg" not in "".join(value for values in settings.values() for value in values)
    config = load_config(REPO / "config/rollbackd.toml")
    assert config.daemon.state_dir == Path("/var/lib/") / settings["Service.StateDirectory"][0]

    drop_in = unit_settings(EXAMPLE_DROP_IN)
    assert set(drop_in) == {"Service.SupplementaryGroups", "Service.ReadWritePaths"}
    [writable] = drop_in["Service.ReadWritePaths"]
    [service] = config.service
    data_dir = Path(writable)
    assert service.database.parent == data_dir
    assert data_dir in service.backups.dir.parents
    assert drop_in["Service.SupplementaryGroups"] == ["vbrpg"]


def test_polkit_rule_names_the_unit_the_shipped_config_controls() -> None:
    shipped = tomllib.loads((REPO / "config/rollbackd.toml").read_text())
    unit = shipped["service"][0]["control"]["unit"]
    rule = (REPO / "packaging/polkit/50-rollbackd.rules").read_text()
    assert f'var UNITS = ["{unit}"];' in rule
    assert 'subject.user !== "rollbackd"' in rule


MDWE_PROBE = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    print("unsupported", os.strerror(ctypes.get_errno()))
    sys.exit(0)
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except OSError:
    pass
else:
    sys.exit("MDWE is not enforced: a writable+executable mapping was allowed")

import asyncio, sqlite3, tempfile, time
from pathlib import Path
import alembic.config, h11, prometheus_client, psutil, pydantic, sqlalchemy
from watchdog.observers import Observer
from watchdog.events import FileSystemEventHandler
from rollbackd.cli import build_parser
from rollbackd.config.model import load_config
from rollbackd.metrics import Metrics
from rollbackd.runtime.systemd import Notifier

load_config(Path(sys.argv[1]))
Metrics()
Notifier({})
build_parser()
psutil.Process().memory_info()
with tempfile.TemporaryDirectory() as folder:
    engine = sqlalchemy.create_engine(f"sqlite:///{folder}/x.db")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("create table t (x)"))
    engine.dispose()
    observer = Observer()
    observer.schedule(FileSystemEventHandler(), folder)
    observer.start()
    Path(folder, "touched").write_text("x")
    observer.stop()
    observer.join()
asyncio.run(asyncio.sleep(0))
print("ok")
"""


def test_runtime_works_without_writable_executable_memory() -> None:
    """MemoryDenyWriteExecute=yes: the daemon's imports and the work they do never need W+X memory."""
    result = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE, str(REPO / "config/rollbackd.toml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.stdout.startswith("unsupported"):
        pytest.skip(f"kernel without PR_SET_MDWE (Linux >= 6.3): {result.stdout.strip()}")
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
