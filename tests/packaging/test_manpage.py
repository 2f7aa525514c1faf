"""rollbackd(1) is generated from the CLI's parser (packaging/manpage.py): every command and option is in it,
and groff reads it without a warning."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rollbackd.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def test_man_page_lists_every_command_and_renders_without_warnings(tmp_path: Path) -> None:
    page = subprocess.run(
        [sys.executable, "-B", str(REPO / "packaging/manpage.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert page.startswith(".TH ROLLBACKD 1 ")
    parser = build_parser()
    commands = next(action for action in parser._actions if action.dest == "command").choices
    for name in commands:
        assert f".SS {name}\n" in page.replace("\\-", "-"), name
    assert "\\fB\\-\\-restore\\fR" in page  # an option of a subcommand (rollback --restore)
    if shutil.which("man") is None:
        pytest.skip("man (Debian man-db) is not installed: the page was generated but not rendered")
    path = tmp_path / "rollbackd.1"
    path.write_text(page)
    rendered = subprocess.run(
        ["man", "--warnings", "-l", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"MANWIDTH": "80", "LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"},
    )
    assert (rendered.returncode, rendered.stderr) == (0, "")
    assert "rollbackd - watchdog that runs the SQLite + Alembic rollback runbook" in rendered.stdout
