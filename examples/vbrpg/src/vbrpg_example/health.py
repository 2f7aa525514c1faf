"""The health check: can the database answer, and does the code know its schema?

Each check opens a fresh connection and reads the database (no pool, no cache), because a pooled
connection may keep serving pages from memory after the file underneath was damaged or replaced. It
reads alembic_version and one row of each core table; a corrupt table root, a missing file, a lock held
past the busy timeout or a revision the code's scripts do not know (the runbook's Scenario 2) all fail it.
"""

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from vbrpg_example.migration_scripts import MigrationScripts
from vbrpg_example.sqlite_connection import DatabaseMissing, connect, read_revision

CORE_TABLES = ("players", "game_rooms", "game_room_participants")
# `SELECT *`, not `SELECT 1`: for the latter SQLite reads the smallest covering index and never touches
# the table's own b-tree, so a damaged table would pass.
_CORE_QUERIES = tuple(f"SELECT * FROM {table} LIMIT 1" for table in CORE_TABLES)  # noqa: S608 - fixed names


@dataclass(frozen=True)
class HealthReport:
    ok: bool
    revision: str | None
    code_head: str | None
    reason: str | None = None

    def as_json(self) -> dict[str, object]:
        if self.ok:
            return {"status": "ok", "revision": self.revision, "code_head": self.code_head}
        return {
            "status": "error",
            "reason": self.reason,
            "revision": self.revision,
            "code_head": self.code_head,
        }


def check_health(database_path: Path, scripts: MigrationScripts, busy_timeout_seconds: float) -> HealthReport:
    """Given the database and the code's scripts, return whether the service can do its work."""
    try:
        code_head = scripts.head()
    except Exception as error:  # noqa: BLE001 - any failure to read the scripts is a health failure
        return HealthReport(False, None, None, f"cannot read migration scripts: {error}")
    try:
        connection = connect(database_path, busy_timeout_seconds)
    except (DatabaseMissing, sqlite3.Error) as error:
        return HealthReport(False, None, code_head, f"database unavailable: {error}")
    revision = None
    try:
        revision = read_revision(connection)
        if revision is None:
            return HealthReport(False, None, code_head, "database has no alembic_version: never migrated")
        for query in _CORE_QUERIES:
            connection.execute(query).fetchall()
    except (sqlite3.Error, ValueError) as error:
        return HealthReport(False, revision, code_head, f"database query failed: {error}")
    finally:
        connection.close()
    if not scripts.knows(revision):
        return HealthReport(
            False,
            revision,
            code_head,
            f"database revision {revision} is unknown to the code's migration scripts (code head {code_head})",
        )
    return HealthReport(True, revision, code_head)
