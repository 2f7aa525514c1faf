"""`migrate`: move a database to a target revision, upgrading or downgrading as the target requires.

Alembic needs to be told the direction; an operator asking for "revision X" should not have to. The
direction comes from the database's current revision and the app dir's revision graph.
"""

import re
from pathlib import Path

from vbrpg_example.alembic_runner import AlembicRun, run_alembic
from vbrpg_example.app_dir import AppDir
from vbrpg_example.errors import MigrationFailed, UsageError
from vbrpg_example.sqlite_connection import DatabaseMissing, connect, read_revision

_RELATIVE_DOWN = re.compile(r"^-\d+$")
_RELATIVE_UP = re.compile(r"^\+\d+$")


def current_revision(database_path: Path) -> str | None:
    """Return the database's revision; None for a missing or never-migrated database."""
    try:
        connection = connect(database_path)
    except DatabaseMissing:
        return None
    try:
        return read_revision(connection)
    finally:
        connection.close()


def direction_to(app_dir: AppDir, current: str | None, target: str) -> str:
    """Return "upgrade" or "downgrade" for going from `current` to `target`.

    Raise UsageError if the database's revision or the target is unknown to the app dir's scripts.
    """
    if target in ("head", "heads") or _RELATIVE_UP.match(target):
        return "upgrade"
    if target == "base" or _RELATIVE_DOWN.match(target):
        return "downgrade"
    if current is None:
        return "upgrade"
    # Alembic is imported only when a revision id needs the graph: the migration itself runs in a child
    # process, so the common targets above cost one Alembic start-up, not two.
    from alembic.util import CommandError

    from vbrpg_example.migration_scripts import MigrationScripts

    scripts = MigrationScripts(app_dir)
    if not scripts.knows(current):
        raise UsageError(
            f"the database is at {current}, which {app_dir.versions_path} does not know: "
            "put its script back (a script vault copy) or restore a backup"
        )
    try:
        target_script = scripts.script_directory().get_revision(target)
    except CommandError as error:
        raise UsageError(f"unknown target revision {target!r}: {error}") from error
    if target_script is None:
        raise UsageError(f"unknown target revision {target!r}")
    return "downgrade" if target_script.revision in scripts.ancestors(current) else "upgrade"


def migrate(database_path: Path, app_dir: AppDir, target: str = "head", *, journal_mode: str = "wal") -> AlembicRun:
    """Migrate to `target` (head, base, a revision id or prefix, -N, +N). Raise MigrationFailed on failure."""
    direction = direction_to(app_dir, current_revision(database_path), target)
    run = run_alembic(app_dir, database_path, [direction, target], journal_mode=journal_mode)
    if not run.ok:
        raise MigrationFailed(f"alembic {direction} {target} failed (exit {run.returncode}):\n{run.tail()}")
    return run
