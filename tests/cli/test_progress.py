"""`rollbackd restore` and `backup` tell a person what they are doing while they do it: each restore step is
printed when it ends (not all at the end), the live line names the phase with bytes, rate and ETA on a terminal,
and elsewhere each phase is one plain line. Real databases, a real backup, real subprocesses and a real pty."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from rollbackd.cli.progress import PhaseProgress
from tests.backup.helpers import grow_database, make_database, make_service
from tests.support.terminal import stderr_on_a_terminal


def rollbackd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Both streams into one pipe, so their order is the order things were printed in."""
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", "--config", str(config), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def backed_up(tmp_path: Path) -> Path:
    service = make_service(tmp_path)  # control kind none: the restore runs with --service-stopped
    make_database(service.database)
    grow_database(service.database, 2)
    config = tmp_path / "rollbackd.toml"
    assert rollbackd(config, "backup").returncode == 0
    return config


def test_restore_prints_each_step_as_it_happens(backed_up: Path) -> None:
    result = rollbackd(backed_up, "restore", "--yes", "--service-stopped")
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert "\r" not in result.stdout  # not a terminal: no bar
    order = [
        "copy backup beside the database ...",
        "copy backup beside the database: ",
        "verify the copy ...",
        "verify the copy: ",
        "quarantine old files and swap in the backup ...",
        "quarantine old files and swap in the backup: ",
        "check the restored database ...",
        "check the restored database: ",
        "restored ",
    ]
    positions = [next(i for i, line in enumerate(lines) if line.startswith(start)) for start in order]
    assert positions == sorted(positions), lines
    assert sum(line.startswith("copy backup beside the database: ") for line in lines) == 1  # not again at the end
    restored = next(line for line in lines if line.startswith("restored "))
    assert restored.endswith("rows: game_room_participants 10, game_rooms 2, players 10"), restored  # no dict


def test_restore_on_a_terminal_shows_phase_bytes_and_rate(backed_up: Path) -> None:
    code, output = stderr_on_a_terminal(
        [sys.executable, "-m", "rollbackd", "--config", str(backed_up), "restore", "--yes", "--service-stopped"]
    )
    assert code == 0
    assert b"\r\x1b[Kcopy backup beside the database: [" in output and b"100%" in output
    assert b" of 2." in output and b"MiB/s" in output
    assert b"\r\x1b[Kverify the copy ..." in output
    assert output.endswith(b"\r\x1b[K")  # the live line is cleared at the end


def test_the_line_has_bytes_rate_and_eta_from_the_callbacks() -> None:
    moments = iter([0.0, 2.0, 2.05, 4.0])
    stream = io.StringIO()
    progress = PhaseProgress(stream, clock=lambda: next(moments), interactive=True)
    progress.phase("copying vbrpg.db", scale=4096)
    progress(1280, 2560)  # 5 MiB of 10 MiB after 2 s
    progress(1300, 2560)  # 0.05 s later: not redrawn
    progress(2560, 2560)
    progress.close()
    text = stream.getvalue()
    assert "copying vbrpg.db: [############            ]  50% 5.0 MiB of 10.0 MiB, 2.5 MiB/s, ETA 2 s" in text
    assert "5.1 MiB" not in text
    assert "100% 10.0 MiB of 10.0 MiB, 2.5 MiB/s" in text and text.endswith("\r\x1b[K")


def test_not_on_a_terminal_a_phase_is_one_plain_line_and_bytes_print_nothing() -> None:
    stream = io.StringIO()
    progress = PhaseProgress(stream, interactive=False)
    progress.phase("copying vbrpg.db")
    progress(10, 20)
    progress(20, 20)
    progress.close()
    assert stream.getvalue() == "copying vbrpg.db ...\n"
