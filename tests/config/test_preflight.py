"""check-config refuses configs that are valid in shape but cannot run here, and warns on ones that probably
should not; the daemon refuses them before it creates anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rollbackd.config.model import parse_config
from rollbackd.config.preflight import MAX_SOCKET_PATH_BYTES, preflight_problems, preflight_warnings

BASE = """
[daemon]
state_dir = "{state_dir}"
metrics_listen = "{metrics_listen}"
{daemon}

[[service]]
name = "vbrpg"
workdir = "{root}"
database = "{database}"
base_url = "http://127.0.0.1:9"
{service}
"""


def write(root: Path, **parts: str) -> Path:
    values = {"state_dir": "state", "metrics_listen": "127.0.0.1:9797", "daemon": "", "database": "vbrpg.db",
              "service": "", "root": str(root)} | parts  # fmt: skip
    (root / "vbrpg.db").touch()
    path = root / "rollbackd.toml"
    path.write_text(BASE.format(**values))
    return path


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", "check-config", "--quiet", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


LONG_SOCKET = "/tmp/" + "s" * (MAX_SOCKET_PATH_BYTES - len("/tmp/") + 1)
CASES = [
    ("backups.dir is the database", {"service": '[service.backups]\ndir = "vbrpg.db"'},
     "service[0].backups.dir", "is the database file itself"),
    ("database is a directory", {"database": "data"}, "service[0].database", "is a directory, not a database file"),
    ("state_dir is a file", {"state_dir": "vbrpg.db"}, "daemon.state_dir", "is a file, not a directory"),
    ("socket path too long", {"daemon": f'control_socket = "{LONG_SOCKET}"'}, "daemon.control_socket",
     f"is {MAX_SOCKET_PATH_BYTES + 1} bytes long"),
    ("metrics host unresolvable", {"metrics_listen": "no-such-host.invalid:9797"}, "daemon.metrics_listen",
     "cannot resolve the host 'no-such-host.invalid'"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "parts", "key", "fragment"), CASES, ids=[case[0] for case in CASES])
def test_a_config_that_cannot_run_is_an_error(
    tmp_path: Path, case: str, parts: dict[str, str], key: str, fragment: str
) -> None:
    (tmp_path / "data").mkdir()
    path = write(tmp_path, **parts)
    result = check_config(path)
    assert result.returncode == 2, result.stderr
    [line] = [line for line in result.stderr.splitlines() if key in line]
    assert fragment in line, line
    assert line.startswith(f"{path}:"), line  # with the line of the key where it is written
    assert "Traceback" not in result.stderr


def test_the_shipped_example_config_passes(tmp_path: Path) -> None:
    result = check_config(write(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "warning: daemon.metrics_listen" not in result.stderr


@pytest.mark.parametrize("listen", ["0.0.0.0:9797", "[::]:9797"])
def test_metrics_off_loopback_and_sub_second_probes_are_warned(tmp_path: Path, listen: str) -> None:
    path = write(tmp_path, metrics_listen=listen, service='[service.probes.health]\nevery = "200ms"')
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert f"warning: daemon.metrics_listen '{listen}' serves /metrics beyond this host" in result.stderr
    assert "warning: service[0].probes.health.every = 0.2s" in result.stderr


def test_localhost_and_one_second_probes_are_not_warned(tmp_path: Path) -> None:
    config = parse_config(
        write(tmp_path, metrics_listen="localhost:9797", service='[service.probes.sqlite_lock]\nevery = "1s"')
        .read_text(), tmp_path / "rollbackd.toml",
    )  # fmt: skip
    assert preflight_problems(config) == []
    assert preflight_warnings(config) == []
