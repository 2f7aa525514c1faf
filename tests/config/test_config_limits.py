"""Config input past what TOML or a person means: too deep, too many problems, integers past 64 bits. Each is a
clear config error (exit 2), never a RecursionError or minutes of output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rollbackd.config.model import MAX_REPORTED_PROBLEMS, ConfigError, parse_config

SERVICE = """
[[service]]
name = "vbrpg"
workdir = "."
database = "vbrpg.db"
base_url = "http://127.0.0.1:8000"
"""

CASES = [
    ("100k-deep array", SERVICE + "x = " + "[" * 100_000 + "]" * 100_000 + "\n", "", "nested too deeply"),
    ("integer past 64 bits", SERVICE + "[service.backups]\nkeep_last = 99999999999999999999999\n",
     "service[0].backups.keep_last", "does not fit in 64 bits"),
    ("negative integer past 64 bits", SERVICE + "[service.alembic]\nenv = { A = -9223372036854775809 }\n",
     "service[0].alembic.env.A", "does not fit in 64 bits"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "text", "key", "fragment"), CASES, ids=[case[0] for case in CASES])
def test_input_past_the_limits_is_one_clear_problem(
    tmp_path: Path, case: str, text: str, key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, tmp_path / "rollbackd.toml")
    problems = [problem for problem in raised.value.problems if fragment in problem.message]
    assert [problem.key for problem in problems] == [key], raised.value.render()


def test_the_largest_64_bit_integer_is_still_accepted(tmp_path: Path) -> None:
    text = SERVICE + "[service.backups]\nmin_free_bytes = 9223372036854775807\n"
    assert parse_config(text, tmp_path / "rollbackd.toml").service[0].backups.min_free_bytes == 2**63 - 1


def test_200k_unknown_keys_are_reported_capped_with_a_count(tmp_path: Path) -> None:
    path = tmp_path / "rollbackd.toml"
    path.write_text(SERVICE + "".join(f"unknown{index} = 1\n" for index in range(200_000)))
    result = subprocess.run(
        [sys.executable, "-m", "rollbackd", "check-config", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == MAX_REPORTED_PROBLEMS + 1
    assert lines[0] == f"{path}:7: service[0].unknown0: unknown key; expected one of: " + (
        "alembic, backups, base_url, control, database, deploy, health_path, name, policy, probes, replication, rules, "
        "verify, "
        "workdir"
    )
    assert lines[-1] == f"{path}: ... and {200_000 - MAX_REPORTED_PROBLEMS} more problem(s) not shown"
