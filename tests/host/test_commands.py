"""External commands run as argv lists with a timeout that kills the whole process group."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from rollbackd.host.commands import OUTPUT_TAIL_CHARS, run_command, run_command_async
from tests.support.rollbackd_daemon import wait_for


def test_exit_code_and_output_are_recorded(tmp_path: Path) -> None:
    result = run_command(
        [sys.executable, "-c", "import os,sys; print(os.getcwd()); sys.exit(3)"], cwd=tmp_path, timeout=30
    )
    assert result.exit_code == 3
    assert not result.ok
    assert str(tmp_path) in result.output_tail
    assert "exit 3" in result.summary()


def test_arguments_are_not_interpreted_by_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    result = run_command(["echo", f"; touch {marker}"], timeout=30)
    assert result.ok
    assert not marker.exists()


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    result = run_command([sys.executable, "-c", script], timeout=2)
    assert result.timed_out
    assert result.exit_code is None
    child = int(pid_file.read_text())
    # SIGKILL to the group is sent before run_command returns, but the grandchild dies when the kernel next runs
    # it: on a loaded machine that can be a moment later, so wait for its end rather than expect it at once.
    wait_for(lambda: not _alive(child), "the grandchild to die of the group's SIGKILL", timeout=10)


def test_missing_program_is_reported_not_raised() -> None:
    result = run_command(["/nonexistent/alembic", "current"], timeout=5)
    assert result.exit_code is None
    assert "No such file" in result.error
    assert "could not run" in result.summary()


def test_output_tail_is_bounded() -> None:
    result = run_command([sys.executable, "-c", "print('x' * 100000 + 'END')"], timeout=30)
    assert len(result.output_tail) == OUTPUT_TAIL_CHARS
    assert result.output_tail.rstrip().endswith("END")


def test_async_run_matches_sync_run(tmp_path: Path) -> None:
    result = asyncio.run(run_command_async([sys.executable, "-c", "print('hello')"], cwd=tmp_path, timeout=30))
    assert result.ok
    assert result.output_tail.strip() == "hello"
    slow = asyncio.run(run_command_async([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1))
    assert slow.timed_out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    status = Path(f"/proc/{pid}/status").read_text()
    return "State:\tZ" not in status
