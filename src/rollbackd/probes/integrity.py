"""The runbook's `PRAGMA integrity_check`, on a schedule, plus foreign keys and the indexes a migration dropped.

One probe object runs every ``quick_every``: ``quick_check`` usually, ``integrity_check`` (7x slower, see
DESIGN.md) when ``full_every`` has passed since the last completed one (kept in ``integrity.json`` so a restart
does not postpone it forever), and ``foreign_key_check`` each time. All on a read-only connection whose progress
handler aborts the check past ``timeout``. In rollback-journal mode a check holds a read lock for its duration,
so a writer's commit waits that long (its busy timeout); in WAL mode writers are not blocked.

Missing indexes: the issue asked for "every index that exists at the code head", but a migration that drops an
index *is* the code head, so that rule cannot see Scenario 4. Instead the probe learns the index set of each
revision the first time it sees it (``indexes.json``) and reports the indexes of the revision the database was at
before its last revision change that are absent now (``missing_vs_previous_revision``), plus the configured
``expected_indexes`` that are absent. An intentional index drop is reported too, until the next revision change;
the policy pairs it with latency before acting.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rollbackd.config.model import ServiceConfig
from rollbackd.host.atomic_files import read_json, write_json_atomic
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.probes.base import ProbeContext
from rollbackd.probes.unchanged import SAME_DATABASE, DatabaseStamp
from rollbackd.target.database import SCAN_CACHE_KIB, DatabaseUnavailable, connect_readonly, index_names, read_revision

MAX_ERRORS = 20  # quick_check(N) / integrity_check(N): stop after N problems, list them
MAX_FK_ROWS = 20  # violations listed in the detail
MAX_FK_COUNT = 10_000  # violations counted before giving up counting
PROGRESS_STEPS = 10_000  # SQLite VM instructions between two deadline checks


class CheckTimeout(Exception):
    pass


@dataclass
class CheckResult:
    kind: str  # quick or full
    errors: list[str] = field(default_factory=list)
    fk_violations: list[dict[str, Any]] = field(default_factory=list)
    fk_count: int = 0
    revision: str | None = None
    indexes: set[str] = field(default_factory=set)


class IntegrityProbe:
    name = "integrity"

    def __init__(self, service: ServiceConfig, context: ProbeContext) -> None:
        config = service.probes.integrity
        self.service = service.name
        self.interval = config.quick_every
        self.full_every = config.full_every
        self.timeout = config.timeout
        self.check_foreign_keys = config.foreign_keys
        self.expected_indexes = set(config.expected_indexes or ())
        self.database = service.database
        self._clock: Callable[[], float] = context.clock
        self._stopping = context.stopping
        state_dir = context.state_dir.service_dir(service.name)
        self._indexes_path = state_dir / "indexes.json"
        self._schedule_path = state_dir / "integrity.json"
        self._schedule: dict[str, Any] | None = None  # integrity.json, read at the first run, written when it changes
        # The stamp taken before the last passing check and that check's observation (probes/unchanged.py).
        self._watch = context.change_watches.of(self.database)
        self._passed: tuple[DatabaseStamp, float, Observation] | None = None

    async def run(self) -> Observation:
        return await asyncio.to_thread(self.check)

    def check(self) -> Observation:
        now = self._clock()
        if self._schedule is None:
            loaded = read_json(self._schedule_path)
            self._schedule = loaded if isinstance(loaded, dict) else {}
        schedule = self._schedule
        last_full = schedule.get("last_full_at")
        kind = "full" if not isinstance(last_full, int | float) or now - last_full >= self.full_every else "quick"
        stamp = self._watch.stamp()  # before the check: a commit during it gives a new stamp next time
        skipped = self._unchanged_since_passing(stamp) if kind == "quick" else None
        if skipped is not None:
            return skipped
        values: dict[str, float] = {"full": float(kind == "full")}
        detail: dict[str, Any] = {"check": kind}
        try:
            values["database_size_bytes"] = float(os.stat(self.database).st_size)
        except FileNotFoundError as error:
            # A database this probe has checked before is gone (a lost disk, an rm): a fact the policy acts on.
            # One never seen (a service not set up yet) is only unavailable.
            return self._failed("missing" if self._schedule_path.exists() else "unavailable", values, detail, error)
        except OSError as error:
            return self._failed("unavailable", values, detail, error)
        try:
            result = self._run_checks(kind)
        except DatabaseUnavailable as error:
            return self._failed("unavailable", values, detail, error)
        except CheckTimeout:
            return self._failed("timeout", values, detail, f"{kind} check did not finish in {self.timeout}s")
        except FileNotFoundError as error:
            return self._failed("unavailable", values, detail, error)
        except sqlite3.DatabaseError as error:
            message = str(error)
            if "not a database" in message:
                return self._failed("not_a_database", values, detail, error)
            if "malformed" in message or "corrupt" in message:
                return self._failed("corrupt", values, detail, error)
            return self._failed("unavailable", values, detail, error)
        if kind == "full" and not result.errors:
            updated = {**schedule, "last_full_at": now}
            write_json_atomic(self._schedule_path, updated)
            self._schedule = updated
        missing_previous, missing_configured = self._missing_indexes(result)
        missing = sorted(set(missing_previous) | set(missing_configured))
        values.update(
            {
                "errors": float(len(result.errors)),
                "foreign_key_violations": float(result.fk_count),
                "missing_indexes": float(len(missing)),
            }
        )
        detail.update(
            {
                "errors": result.errors[:5],
                "foreign_key_violations": result.fk_violations,
                "missing_indexes": missing,
                "missing_vs_previous_revision": missing_previous,
                "missing_configured": missing_configured,
                "revision": result.revision,
            }
        )
        reason = ""
        if result.errors:
            reason = "corrupt"
        elif result.fk_count:
            reason = "foreign_key_violation"
        elif missing:
            reason = "missing_index"
        observation = Observation(self.service, self.name, ok=not reason, reason=reason, values=values, detail=detail)
        self._passed = (stamp, now, observation) if observation.ok and stamp is not None else None
        return observation

    def _unchanged_since_passing(self, stamp: DatabaseStamp | None) -> Observation | None:
        """The last passing observation again, marked skipped, when SQLite proves nothing changed since it."""
        if stamp is None or self._passed is None or self._passed[0] != stamp:
            return None
        _, at, passed = self._passed
        detail = {
            **passed.detail,
            "check": "skipped",
            "skipped": f"unchanged since the passing check at {at:.0f}: {SAME_DATABASE}",
        }
        return Observation(self.service, self.name, ok=True, values={**passed.values, "full": 0.0}, detail=detail)

    def _run_checks(self, kind: str) -> CheckResult:
        deadline = time.monotonic() + self.timeout
        stopping = self._stopping
        # A quick_check reads each page once; the full check looks rows up in every index (SQLite's default cache).
        cache = SCAN_CACHE_KIB if kind == "quick" else None
        connection = connect_readonly(self.database, timeout=min(self.timeout, 5.0), cache_kib=cache)
        try:
            connection.set_progress_handler(
                lambda: int(time.monotonic() > deadline or stopping.is_set()), PROGRESS_STEPS
            )
            result = CheckResult(kind)
            try:
                pragma = "quick_check" if kind == "quick" else "integrity_check"
                rows = connection.execute(f"PRAGMA {pragma}({MAX_ERRORS})").fetchall()
                result.errors = [str(row[0]) for row in rows if str(row[0]) != "ok"]
                if self.check_foreign_keys:
                    cursor = connection.execute("PRAGMA foreign_key_check")
                    for table, rowid, parent, _ in cursor:
                        result.fk_count += 1
                        if len(result.fk_violations) < MAX_FK_ROWS:
                            result.fk_violations.append({"table": table, "rowid": rowid, "parent": parent})
                        if result.fk_count >= MAX_FK_COUNT:
                            break
                    cursor.close()
                result.revision = read_revision(connection)
                result.indexes = index_names(connection)
            except sqlite3.OperationalError as error:
                if "interrupted" in str(error):
                    raise CheckTimeout from error
                raise
            return result
        finally:
            connection.close()

    def _missing_indexes(self, result: CheckResult) -> tuple[list[str], list[str]]:
        """Learn this revision's index set if new; return (missing vs the previous revision, missing configured)."""
        state = read_json(self._indexes_path)
        if not isinstance(state, dict):
            state = {}
        learned: dict[str, list[str]] = state.get("indexes", {})
        revision = result.revision or ""
        current, previous = state.get("revision"), state.get("previous_revision")
        if current != revision:
            previous = current
        changed = current != revision or revision not in learned
        if changed:
            learned.setdefault(revision, sorted(result.indexes))
            write_json_atomic(
                self._indexes_path, {"revision": revision, "previous_revision": previous, "indexes": learned}
            )
        missing_previous = sorted(set(learned.get(previous, ())) - result.indexes) if previous is not None else []
        return missing_previous, sorted(self.expected_indexes - result.indexes)

    def _failed(self, reason: str, values: dict[str, float], detail: dict[str, Any], error: object) -> Observation:
        return Observation(
            self.service, self.name, ok=False, reason=reason, values=values, detail={**detail, "error": str(error)}
        )

    def export(self, metrics: Metrics, observation: Observation) -> None:
        service = self.service
        if "database_size_bytes" in observation.values:
            metrics.sqlite_database_size_bytes.labels(service=service).set(observation.values["database_size_bytes"])
        if "errors" not in observation.values and observation.reason not in ("corrupt", "not_a_database"):
            return  # the check did not run to a verdict (unavailable, timeout)
        check = "full" if observation.values.get("full") else "quick"
        metrics.sqlite_check_ok.labels(service=service, check=check).set(observation.values.get("errors", 1.0) == 0)
        if "errors" in observation.values:
            metrics.sqlite_check_ok.labels(service=service, check="foreign_keys").set(
                observation.values["foreign_key_violations"] == 0
            )
            metrics.sqlite_check_ok.labels(service=service, check="indexes").set(
                observation.values["missing_indexes"] == 0
            )
            metrics.sqlite_missing_indexes.labels(service=service).set(observation.values["missing_indexes"])
