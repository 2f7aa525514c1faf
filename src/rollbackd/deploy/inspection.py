"""What a rehearsal checks after each step on the scratch copy: soundness, foreign keys, rows, indexes, schema.

The runbook's checks (``PRAGMA integrity_check``, ``PRAGMA foreign_key_check``, ``SELECT COUNT(*)``, ``.indexes``)
plus the schema fingerprint that tells "back where it was" from "partially migrated". Only ever run on a copy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollbackd.target import database

SHOWN_PROBLEMS = 5


@dataclass(frozen=True)
class DatabaseState:
    revision: str | None
    integrity: tuple[str, ...]  # ("ok",) when sound
    foreign_key_violations: int
    foreign_key_examples: tuple[str, ...]
    row_counts: dict[str, int | None]
    tables: frozenset[str]
    indexes: frozenset[str]
    schema_fingerprint: str
    seconds: float

    @property
    def sound(self) -> bool:
        return self.integrity == ("ok",) and self.foreign_key_violations == 0

    def problems(self) -> list[str]:
        found = []
        if self.integrity != ("ok",):
            found.append(f"integrity_check: {'; '.join(self.integrity[:SHOWN_PROBLEMS])}")
        if self.foreign_key_violations:
            found.append(
                f"foreign_key_check: {self.foreign_key_violations} violations ({', '.join(self.foreign_key_examples)})"
            )
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "integrity": list(self.integrity),
            "foreign_key_violations": self.foreign_key_violations,
            "row_counts": dict(self.row_counts),
            "tables": sorted(self.tables),
            "indexes": sorted(self.indexes),
            "schema_fingerprint": self.schema_fingerprint,
            "check_seconds": round(self.seconds, 3),
        }


def inspect_database(path: Path, tables: Sequence[str]) -> DatabaseState:
    """Check the database at ``path`` (read-only). Raise DatabaseUnavailable or sqlite3.Error when it cannot be
    read at all."""
    started = time.monotonic()
    with contextlib.closing(database.connect_readonly(path)) as connection:
        integrity = tuple(str(row[0]) for row in connection.execute("PRAGMA integrity_check(20)"))
        violations = connection.execute("PRAGMA foreign_key_check").fetchall()
        examples = tuple(f"{table} row {rowid} -> {parent}" for table, rowid, parent, _ in violations[:3])
        return DatabaseState(
            revision=database.read_revision(connection),
            integrity=integrity,
            foreign_key_violations=len(violations),
            foreign_key_examples=examples,
            row_counts=database.count_rows(connection, tables),
            tables=frozenset(name for name in database.table_names(connection) if not name.startswith("sqlite_")),
            indexes=frozenset(database.index_names(connection)),
            schema_fingerprint=database.schema_fingerprint(connection),
            seconds=time.monotonic() - started,
        )


def rows_lost(before: Mapping[str, int | None], after: Mapping[str, int | None]) -> dict[str, int]:
    """Per table, how many rows fewer ``after`` has than ``before`` (tables that lost none are left out)."""
    lost = {}
    for table, count in before.items():
        now = after.get(table)
        if count is not None and now is not None and now < count:
            lost[table] = count - now
    return lost


def loss_ratios(before: Mapping[str, int | None], lost: Mapping[str, int]) -> dict[str, float]:
    """Per table that lost rows, the fraction of ``before``'s rows that went."""
    ratios = {}
    for table, count in lost.items():
        total = before.get(table)
        if total:
            ratios[table] = count / total
    return ratios


def schema_difference(before: DatabaseState, after: DatabaseState) -> str:
    """Say how ``after``'s schema differs from ``before``'s: tables and indexes added or gone, else "columns"."""
    parts = []
    for kind, old, new in (("table", before.tables, after.tables), ("index", before.indexes, after.indexes)):
        if new - old:
            parts.append(f"{kind} {', '.join(sorted(new - old))} added")
        if old - new:
            parts.append(f"{kind} {', '.join(sorted(old - new))} gone")
    if parts:
        return "; ".join(parts)
    return "same tables and indexes, different definitions (columns or constraints)"
