"""Global options where a person types them: ``--config`` before or after the subcommand, and a missing config
that says how to name one. A real subprocess, real files, real exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "config/demo.toml")


def rollbackd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def without_config_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "ROLLBACKD_CONFIG"}


def test_config_after_the_subcommand_is_the_same_as_before_it() -> None:
    before = rollbackd("--config", DEMO, "rollback", "vbrpg", "--steps", "1", "--code")
    after = rollbackd("rollback", "vbrpg", "--steps", "1", "--code", "--config", DEMO)
    assert after.returncode == before.returncode == 2
    assert "unrecognized arguments" not in after.stderr
    assert after.stderr == before.stderr
    assert "--code needs --restore" in after.stderr


def test_config_after_the_subcommand_wins_over_the_one_before(tmp_path: Path) -> None:
    result = rollbackd("--config", str(tmp_path / "missing.toml"), "check-config", "--quiet", "--config", DEMO)
    assert result.returncode == 0, result.stderr
    assert f"{DEMO}: valid" in result.stderr


def test_config_before_the_subcommand_is_kept_when_none_follows(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    result = rollbackd("--config", str(missing), "status", env=without_config_env())
    assert result.returncode == 2
    assert str(missing) in result.stderr


def test_a_missing_config_names_both_ways_to_give_one(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    for args, env, source in (
        (["status", "--config", str(missing)], without_config_env(), "--config"),
        (["history"], {**without_config_env(), "ROLLBACKD_CONFIG": str(missing)}, "$ROLLBACKD_CONFIG"),
    ):
        result = rollbackd(*args, env=env)
        assert result.returncode == 2, args
        assert result.stdout == ""
        assert str(missing) in result.stderr
        assert f"named by {source}" in result.stderr
        assert "--config PATH" in result.stderr and "$ROLLBACKD_CONFIG" in result.stderr
        assert "Traceback" not in result.stderr


def test_subcommand_help_shows_the_config_option() -> None:
    result = rollbackd("status", "--help")
    assert result.returncode == 0
    assert "--config PATH" in result.stdout
