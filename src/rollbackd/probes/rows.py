"""Row counts of the runbook's tables, against the last run and against the counts before the last revision change.

Scenario 3 ("data loss after migration") shows as counts that fell across a revision change. The baseline is the
last counts seen at the previous revision, kept in ``rows.json`` (atomic writes) so a daemon restart after a bad
deploy still compares against the data before it. Drops are facts for the policy (values
``drop_ratio_since_revision_change`` per table and the largest), not a failure here: deleting rows is normal
work, and whether a drop across a migration is a disaster is the rule's threshold. The probe fails only when it
cannot count (``unavailable``) or a table it counted before has vanished (``table_missing``).

Counting is skipped when SQLite proves the database unchanged since the last count (probes/unchanged.py: the
stamp taken before it); the run then reports those counts again, and says so in ``detail["skipped"]``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from rollbackd.config.model import ServiceConfig
from rollbackd.host.atomic_files import read_json, write_json_atomic
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.probes.base import DEFAULT_TIMEOUT, ProbeContext
from rollbackd.probes.unchanged import SAME_DATABASE, DatabaseStamp
from rollbackd.target.database import SCAN_CACHE_KIB, DatabaseUnavailable, connect_readonly, count_rows, read_revision

PROGRESS_STEPS = 10_000
PERSIST_EVERY = 60.0


def drop_ratio(before: int | None, now: int | None) -> float:
    """The share of ``before`` rows that are gone (0.0 when it grew or there is nothing to compare)."""
    if not before or now is None:
        return 0.0
    return max(0.0, (before - now) / before)


class RowsProbe:
    name = "rows"

    def __init__(self, service: ServiceConfig, context: ProbeContext) -> None:
        config = service.probes.rows
        self.service = service.name
        self.interval = config.every
        self.timeout = DEFAULT_TIMEOUT
        self.tables = list(config.tables)
        self.database = service.database
        self._clock = context.clock
        self._stopping = context.stopping
        self._state_path = context.state_dir.service_dir(service.name) / "rows.json"
        self._state: dict[str, Any] | None = None  # rows.json, read once, written when it matters
        self._written: dict[str, Any] | None = None  # what rows.json holds now
        self._written_at = 0.0
        # The stamp taken before the last count, when it was taken, and what it counted.
        self._watch = context.change_watches.of(self.database)
        self._counted: tuple[DatabaseStamp, float, tuple[str | None, dict[str, int | None]]] | None = None

    async def run(self) -> Observation:
        return await asyncio.to_thread(self.check)

    def check(self) -> Observation:
        stamp = self._watch.stamp()  # before the count: a commit during it gives a new stamp next time
        skipped = ""
        if stamp is not None and self._counted is not None and self._counted[0] == stamp:
            _, at, (revision, counts) = self._counted
            skipped = f"counts unchanged since {at:.0f}: {SAME_DATABASE}"
        else:
            self._counted = None
            try:
                revision, counts = self._count()
            except (DatabaseUnavailable, sqlite3.DatabaseError, TimeoutError) as error:
                return Observation(
                    self.service, self.name, ok=False, reason="unavailable", detail={"error": str(error)}
                )
            if stamp is not None:
                self._counted = (stamp, self._clock(), (revision, counts))
        if self._state is None:
            loaded = read_json(self._state_path)
            self._state = loaded if isinstance(loaded, dict) else {}
            self._written = self._state
        state = self._state
        previous: Mapping[str, Any] = state.get("counts") or {}
        baseline: Mapping[str, Any] = state.get("baseline") or {}
        baseline_revision = state.get("baseline_revision")
        changed = "revision" not in state or state["revision"] != revision
        if "revision" in state and state["revision"] != revision:
            baseline, baseline_revision = previous, state["revision"]
            state["baseline_at"] = self._clock()
        self._state = {
            "revision": revision,
            "counts": counts,
            "baseline_revision": baseline_revision,
            "baseline": dict(baseline),
            "baseline_at": state.get("baseline_at"),
        }
        # On disk at each revision change (the baseline must survive a restart right after a bad deploy) and
        # otherwise at most once a minute, and only when the counts changed: an fsync'd write per run would be
        # most of this probe's cost at 1 s intervals.
        now = time.monotonic()
        if changed or (self._state != self._written and now - self._written_at >= PERSIST_EVERY):
            write_json_atomic(self._state_path, self._state)
            self._written, self._written_at = self._state, now
        values: dict[str, float] = {}
        since_change: dict[str, float] = {}
        for table, count in counts.items():
            if count is not None:
                values[f"{table}:rows"] = float(count)
            values[f"{table}:drop_ratio_since_previous"] = drop_ratio(previous.get(table), count)
            since_change[table] = drop_ratio(baseline.get(table), count)
            values[f"{table}:drop_ratio_since_revision_change"] = since_change[table]
        values["drop_ratio_since_revision_change"] = max(since_change.values(), default=0.0)
        vanished = sorted(
            table
            for table, count in counts.items()
            if count is None and (previous.get(table) is not None or baseline.get(table) is not None)
        )
        detail = {
            "revision": revision,
            "counts": counts,
            "previous": dict(previous),
            "baseline_revision": baseline_revision,
            "baseline": dict(baseline),
            "drop_ratio_since_revision_change": since_change,
            "absent": sorted(table for table, count in counts.items() if count is None),
            "vanished": vanished,
        }
        if skipped:
            detail["skipped"] = skipped
        reason = "table_missing" if vanished else ""
        return Observation(self.service, self.name, ok=not reason, reason=reason, values=values, detail=detail)

    def _count(self) -> tuple[str | None, dict[str, int | None]]:
        deadline = time.monotonic() + self.timeout
        stopping = self._stopping
        connection = connect_readonly(self.database, timeout=min(self.timeout, 5.0), cache_kib=SCAN_CACHE_KIB)
        try:
            connection.set_progress_handler(
                lambda: int(time.monotonic() > deadline or stopping.is_set()), PROGRESS_STEPS
            )
            try:
                # One read transaction, so the counts and the revision belong to the same moment.
                connection.execute("BEGIN")
                revision = read_revision(connection)
                counts = count_rows(connection, self.tables)
                connection.execute("COMMIT")
            except sqlite3.OperationalError as error:
                if "interrupted" in str(error):
                    raise TimeoutError(f"counting rows took longer than {self.timeout}s") from error
                raise
        finally:
            connection.close()
        return revision, {table: counts.get(table) for table in self.tables}

    def export(self, metrics: Metrics, observation: Observation) -> None:
        for table in self.tables:
            key = f"{table}:rows"
            if key in observation.values:
                metrics.table_rows.labels(service=self.service, table=table).set(observation.values[key])
