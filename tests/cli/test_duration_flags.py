"""Every flag that takes a duration takes it as the config writes one ("2m", "1h30m", "500ms"), and plain
seconds still; a bad one is a usage error naming the accepted forms. Through the real parser and a real
subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rollbackd.cli import build_parser

DEMO = str(Path(__file__).resolve().parents[2] / "config/demo.toml")


@pytest.mark.parametrize(
    ("argv", "field", "seconds"),
    [
        (["verify", "--wait", "2m"], "wait", 120.0),
        (["verify", "--wait", "1m30s"], "wait", 90.0),
        (["verify", "--wait", "120"], "wait", 120.0),
        (["verify", "--wait", "0"], "wait", 0.0),
        (["verify", "--wait", "500ms"], "wait", 0.5),
        (["migrate", "--window", "2m"], "window", 120.0),
        (["migrate", "--window", "45.5"], "window", 45.5),
        (["migrate", "--lock-wait", "1h"], "lock_wait", 3600.0),
    ],
)
def test_duration_flags_take_the_config_spelling_and_plain_seconds(argv: list[str], field: str, seconds: float) -> None:
    assert getattr(build_parser().parse_args(argv), field) == seconds


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["verify", "--wait", "2 minutes"], "is not a duration"),
        (["verify", "--wait", "-5"], "0 or more"),
        (["migrate", "--window", "0s"], "more than 0"),
        (["migrate", "--lock-wait", "soon"], "is not a duration"),
    ],
)
def test_a_bad_duration_is_a_usage_error_that_names_the_forms(argv: list[str], problem: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rollbackd", "--config", DEMO, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert problem in result.stderr
    assert "invalid float value" not in result.stderr and "Traceback" not in result.stderr
    if "is not a duration" in problem:
        assert "'5s'" in result.stderr and "plain seconds" in result.stderr
