"""The daemon's config validated by a real child interpreter: the same config, the same errors, and a daemon that
still starts when no child can run."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from rollbackd.config.child_load import load_config_in_child
from rollbackd.config.model import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]

SERVICES = """
[daemon]
state_dir = "state"
dry_run = true

[[service]]
name = "vbrpg"
workdir = "backend"
database = "data/vbrpg.db"
base_url = "http://127.0.0.1:8000"
control = { kind = "systemd", unit = "vbrpg-backend" }
backups = { keep_last = 5, min_free_bytes = "64MiB" }

[[service.rules]]
name = "health-failing"
for = "2m"

[[service]]
name = "second"
workdir = "/srv/second"
database = "second.db"
base_url = "http://127.0.0.1:8001"
"""

BAD = """
[daemon]
stat_dir = "typo"

[[service]]
name = "vbrpg"
workdir = "/w"
database = "x.db"
base_url = "http://127.0.0.1:8000"
backups = { keep_last = 0 }
"""


def answered_by_the_child(path: Path, caplog: pytest.LogCaptureFixture, python: str | None = None) -> Config:
    """load_config_in_child, failing when it fell back to validating in this process (its one warning)."""
    with caplog.at_level(logging.WARNING, logger="rollbackd.config.child_load"):
        config = load_config_in_child(path, python=python)
    assert not caplog.records, caplog.text
    return config


def test_the_child_hands_back_the_config_load_config_makes_in_this_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rollbackd.toml"
    path.write_text(SERVICES)

    config = answered_by_the_child(path, caplog)

    assert config == load_config(path)
    assert config.service[0].workdir == tmp_path / "backend"  # resolved against the file's folder, in the child
    assert config.service[0].control.kind == "systemd"
    assert [rule.for_ for rule in config.service[0].rules] == [120.0]


def test_a_bad_file_raises_the_same_problems_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "rollbackd.toml"
    path.write_text(BAD)
    with pytest.raises(ConfigError) as here:
        load_config(path)

    with pytest.raises(ConfigError) as child:
        load_config_in_child(path)

    assert child.value.source == path
    assert child.value.problems == here.value.problems
    assert {problem.key for problem in child.value.problems} == {"daemon.stat_dir", "service[0].backups.keep_last"}
    assert all(problem.line for problem in child.value.problems)


def test_an_unreadable_file_is_a_config_error_from_the_child_too(tmp_path: Path) -> None:
    path = tmp_path / "rollbackd.toml"
    path.write_bytes(b"\xff\xfe not utf-8")

    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config_in_child(path)


@pytest.mark.parametrize("python", ["/nonexistent/python3", "/bin/false", "/bin/echo"])
def test_when_no_child_can_answer_the_config_is_validated_here_with_a_warning(
    tmp_path: Path, python: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A missing interpreter, one that fails, one that answers something that is not a pickle.
    path = tmp_path / "rollbackd.toml"
    path.write_text(SERVICES)

    with caplog.at_level(logging.WARNING, logger="rollbackd.config.child_load"):
        config = load_config_in_child(path, python=python)

    assert config == load_config(path)
    assert "validating it in the daemon" in caplog.text


def test_a_bad_file_is_still_refused_when_the_child_cannot_run(tmp_path: Path) -> None:
    path = tmp_path / "rollbackd.toml"
    path.write_text(BAD)

    with pytest.raises(ConfigError, match="keep_last"):
        load_config_in_child(path, python="/bin/false")


def test_the_child_runs_this_checkout_and_not_a_module_in_the_daemons_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A state dir or cwd holding a file named like a module the child imports must not be run by it (-P).
    (tmp_path / "tomllib.py").write_text("raise SystemExit('the cwd was imported')\n")
    path = tmp_path / "rollbackd.toml"
    path.write_text(SERVICES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "")

    config = answered_by_the_child(path, caplog, python=sys.executable)

    assert config == load_config(path)


def test_the_running_binary_as_proc_self_exe_finds_the_same_code_without_a_venv_of_its_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # What a daemon run as a user who may not search a directory on sys.executable's path falls back to: the
    # child gets no venv from its path, only this process's import path.
    path = tmp_path / "rollbackd.toml"
    path.write_text(SERVICES)

    config = answered_by_the_child(path, caplog, python="/proc/self/exe")

    assert config == load_config(path)
