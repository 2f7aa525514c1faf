"""Alembic migration scripts written to disk, with a body the daemon must never import or run."""

from __future__ import annotations

from pathlib import Path


def write_script(directory: Path, revision: str, down: object, *, depends_on: object = None, name: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{revision}_{name or 'step'}.py"
    path.write_text(
        f'''"""{name or "step"}"""
from collections.abc import Sequence

import no_such_module_the_daemon_must_never_import  # importing this script would fail

revision: str = "{revision}"
down_revision: str | Sequence[str] | None = {down!r}
branch_labels = None
depends_on = {depends_on!r}


def upgrade() -> None:
    raise SystemExit("never executed")
'''
    )
    return path
