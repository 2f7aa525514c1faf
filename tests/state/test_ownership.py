"""A command run as root against a state dir another user owns creates nothing: it refuses with one line that
names the owner and the `sudo -u` to use. (Once, `sudo rollbackd history` made /var/lib/rollbackd/rollbackd.db
root:root 0600 and the daemon, user rollbackd, exited 4 on its next start.)"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from rollbackd.state.ownership import StateDirOwnedByOther, refuse_root_in_foreign_state_dir


def write_config(tmp_path: Path, state_dir: Path) -> Path:
    config = tmp_path / "rollbackd.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{state_dir}"\n\n[[service]]\nname = "vbrpg"\nworkdir = "{tmp_path}"\n'
        'database = "vbrpg.db"\nbase_url = "http://127.0.0.1:9"\nhealth_path = "/health"\n'
    )
    return config


def rollbackd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.root
def test_root_refuses_a_state_dir_owned_by_another_user_and_creates_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the refusal is what root gets")
    nobody = pwd.getpwnam("nobody")
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    os.chown(state_dir, nobody.pw_uid, nobody.pw_gid)
    config = write_config(tmp_path, state_dir)
    for command in (["history"], ["status"], ["history", "vbrpg", "--json"]):
        result = rollbackd("--config", str(config), *command)
        assert result.returncode == 2, result
        assert result.stderr == (
            f"rollbackd {command[0]}: the state dir {state_dir} belongs to user nobody; run it as that user: "
            f"sudo -u nobody rollbackd --config {config} {' '.join(command)}\n"
        )
        assert result.stdout == ""
        assert list(state_dir.iterdir()) == []


@pytest.mark.root
def test_root_uses_its_own_or_a_new_state_dir(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    state_dir = tmp_path / "state"
    result = rollbackd("--config", str(write_config(tmp_path, state_dir)), "history")
    assert (result.returncode, result.stdout.strip()) == (0, "no rollbacks recorded yet"), result.stderr


def test_only_root_is_refused(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    owner = state_dir.stat().st_uid
    other = owner + 1
    refuse_root_in_foreign_state_dir(state_dir, euid=other)  # anyone else: the dir's own permissions decide
    refuse_root_in_foreign_state_dir(tmp_path / "missing", euid=0)
    if owner != 0:
        with pytest.raises(StateDirOwnedByOther):
            refuse_root_in_foreign_state_dir(state_dir, euid=0)
