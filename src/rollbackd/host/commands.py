"""External commands (systemctl, alembic, git, the service's own start/stop): argv lists, never a shell.

Every run has a timeout, kills its whole process group when the timeout passes, and records what an incident
record needs: exit code, the tail of its output and how long it took.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTPUT_TAIL_CHARS = 4000
RECORD_TAIL_CHARS = 2000  # of that, what an incident's record keeps


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_code: int | None  # None: it did not run to an exit (timed out, or could not start)
    output_tail: str  # stdout and stderr interleaved, the last OUTPUT_TAIL_CHARS characters
    duration: float
    timed_out: bool = False
    error: str = ""  # why it did not run ("not found", "permission denied") when exit_code is None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def record(self) -> dict[str, Any]:
        """The command as the history keeps it (the output's last RECORD_TAIL_CHARS characters)."""
        return {
            "argv": list(self.argv),
            "exit_code": self.exit_code,
            "duration": round(self.duration, 3),
            "timed_out": self.timed_out,
            "output_tail": self.output_tail[-RECORD_TAIL_CHARS:],
        }

    def summary(self) -> str:
        """One line for logs and history: what ran and how it ended."""
        program = " ".join(self.argv)
        if self.timed_out:
            return f"{program}: timed out after {self.duration:.1f}s"
        if self.exit_code is None:
            return f"{program}: could not run: {self.error}"
        return f"{program}: exit {self.exit_code} in {self.duration:.1f}s"


def _environment(env: Mapping[str, str] | None, inherit_env: bool = True) -> dict[str, str]:
    """``env`` over the daemon's own environment, or exactly ``env`` when ``inherit_env`` is False (a child that
    must not see some inherited variable, e.g. Litestream and AWS_CA_BUNDLE)."""
    if not inherit_env:
        return dict(env or {})
    return {**os.environ, **(env or {})}


def _tail(output: bytes) -> str:
    return output.decode("utf-8", errors="replace")[-OUTPUT_TAIL_CHARS:]


def run_command(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float,
    inherit_env: bool = True,
) -> CommandResult:
    """Run ``argv`` to completion or timeout (blocking; async callers use ``run_command_async``)."""
    started = time.monotonic()
    try:
        process = subprocess.Popen(  # noqa: S603 - argv list, no shell
            list(argv),
            cwd=cwd,
            env=_environment(env, inherit_env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as error:
        return CommandResult(tuple(argv), None, "", time.monotonic() - started, error=error.strerror or str(error))
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        output, _ = process.communicate()
        return CommandResult(tuple(argv), None, _tail(output), time.monotonic() - started, timed_out=True)
    return CommandResult(tuple(argv), process.returncode, _tail(output), time.monotonic() - started)


async def run_command_async(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float,
    inherit_env: bool = True,
) -> CommandResult:
    """Run ``argv`` without blocking the event loop; same result and timeout behaviour as ``run_command``."""
    # Imported here: the blocking commands' callers (check-config's Litestream checks, the CLI) then load no
    # asyncio, and with it no ssl (a tenth of a `rollbackd check-config`); whoever awaits this has it loaded.
    import asyncio

    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=_environment(env, inherit_env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as error:
        return CommandResult(tuple(argv), None, "", time.monotonic() - started, error=error.strerror or str(error))
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        _kill_group(process.pid)
        output, _ = await process.communicate()
        return CommandResult(tuple(argv), None, _tail(output), time.monotonic() - started, timed_out=True)
    except asyncio.CancelledError:
        _kill_group(process.pid)
        await process.wait()
        raise
    return CommandResult(tuple(argv), process.returncode, _tail(output), time.monotonic() - started)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
