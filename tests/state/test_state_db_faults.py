"""A state DB that cannot be read (corrupt, truncated, another user's) gives one line and exit 4 in the commands
that read it, never a SQLAlchemy traceback; bad command-line numbers are refused before anything is read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollbackd.state.history import History

CONFIG = """
[daemon]
state_dir = "state"

[[service]]
name = "vbrpg"
workdir = "."
database = "vbrpg.db"
base_url = "http://127.0.0.1:9"
"""


def rollbackd(config: Path, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "rollbackd", "--config", str(config), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def good_state_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("state") / "rollbackd.db"
    history = History(path)
    try:
        history.upgrade()
    finally:
        history.close()
    return path


def damage(kind: str, good: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "corrupt":
        target.write_bytes(b"\x5a" * good.stat().st_size)
    else:
        target.write_bytes(good.read_bytes()[:5000])


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
@pytest.mark.parametrize("command", [["history"], ["status"], ["resume", "vbrpg"]], ids=" ".join)
def test_an_unreadable_state_db_is_one_line_and_exit_4(
    tmp_path: Path, good_state_db: Path, kind: str, command: list[str]
) -> None:
    config = tmp_path / "rollbackd.toml"
    config.write_text(CONFIG)
    damage(kind, good_state_db, tmp_path / "state" / "rollbackd.db")
    result = rollbackd(config, *command)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "state DB" in line and "cannot read" in line]
    expected = "file is not a database" if kind == "corrupt" else "database disk image is malformed"
    assert line == f"rollbackd {command[0]}: cannot read the state DB {tmp_path / 'state' / 'rollbackd.db'}: {expected}"


@pytest.fixture
def shared_dir(good_state_db: Path) -> Iterator[Path]:
    """A dir another user can reach (pytest's tmp dirs are 0700): the config readable, the state dir root's."""
    root = Path(tempfile.mkdtemp(prefix="rollbackd-other-user-"))
    try:
        root.chmod(0o755)
        (root / "rollbackd.toml").write_text(CONFIG)
        (root / "rollbackd.toml").chmod(0o644)
        (root / "state").mkdir(mode=0o700)
        shutil.copy(good_state_db, root / "state" / "rollbackd.db")
        yield root
    finally:
        shutil.rmtree(root)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="runs a command as nobody: root, setpriv")
def test_status_run_by_another_user_says_permission_denied_without_a_traceback(shared_dir: Path) -> None:
    nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    result = rollbackd(shared_dir / "rollbackd.toml", "status", prefix=nobody)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert "Permission denied" in result.stderr.splitlines()[-1]
    assert result.stderr.splitlines()[-1].startswith("rollbackd status: cannot read the state DB")


@pytest.mark.parametrize("limit", ["-5", "0", "ten"])
def test_history_refuses_a_limit_below_one(tmp_path: Path, limit: str) -> None:
    config = tmp_path / "rollbackd.toml"
    config.write_text(CONFIG)
    result = rollbackd(config, "history", "--limit", limit)
    assert result.returncode == 2
    assert "argument --limit" in result.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was read or created
