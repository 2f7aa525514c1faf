"""Run Alembic the way a deploy does: its own command line, in the app dir, as a child process.

A child process gives the operator Alembic's real output (a failing migration ends in the exception's
traceback, e.g. `sqlalchemy.exc.IntegrityError: ... FOREIGN KEY constraint failed`) and keeps migration
modules out of this process. It runs from the same interpreter, so the app dir's env.py imports this package.
"""

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vbrpg_example.app_dir import AppDir
from vbrpg_example.errors import MigrationFailed

DEFAULT_TIMEOUT_SECONDS = 600.0
_OUTPUT_TAIL_LINES = 25


@dataclass(frozen=True)
class AlembicRun:
    argv: tuple[str, ...]
    returncode: int
    output: str
    duration_seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = _OUTPUT_TAIL_LINES) -> str:
        return "\n".join(self.output.rstrip().splitlines()[-lines:])


def run_alembic(
    app_dir: AppDir,
    database: Path,
    arguments: Sequence[str],
    *,
    journal_mode: str = "wal",
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> AlembicRun:
    """Run `alembic -c APP_DIR/alembic.ini -x db=DATABASE ARGUMENTS...` with cwd=APP_DIR; return its outcome.

    Raise MigrationFailed if it does not finish within the timeout.
    """
    argv = (
        sys.executable,
        "-m",
        "alembic",
        "-c",
        str(app_dir.ini_path),
        "-x",
        f"db={database.resolve()}",
        "-x",
        f"journal_mode={journal_mode}",
        *arguments,
    )
    # No bytecode caches: they would land beside the scripts (even in the packaged template), and a stale
    # one must not outlive a script that `fault reset` removed.
    environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.monotonic()
    try:
        completed = subprocess.run(  # noqa: S603 - fixed argv, our own interpreter
            argv,
            cwd=app_dir.path,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise MigrationFailed(f"alembic {' '.join(arguments)} did not finish in {timeout_seconds:g} s") from error
    return AlembicRun(argv, completed.returncode, completed.stdout, time.monotonic() - started)
