"""The runbook's "Rollback Verification Checklist", as code.

After any rollback the runbook asks for: health 200, ``PRAGMA integrity_check`` ok, ``alembic current`` equal to
the expected version, core functionality (create / join / leave room, add / remove AI agent), data intact,
API response times under a second, and clean logs. Each item's result is kept, so the history shows exactly
what was proven. Items that cannot be checked here (no systemd journal) are marked skipped, never passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rollbackd.config.model import ServiceConfig, SmokeStep, SystemdControl
from rollbackd.host.commands import run_command_async
from rollbackd.host.http_client import HttpClient, HttpError
from rollbackd.target.body_expectations import UNEXPECTED_BODY, BodyExpectations
from rollbackd.target.database import (
    DatabaseUnavailable,
    connect_readonly,
    count_rows,
    index_names,
    read_revision,
    schema_fingerprint,
)

LATENCY_SAMPLES = 3
INTEGRITY_TIMEOUT = 120.0


@dataclass(frozen=True)
class CheckItem:
    name: str
    ok: bool
    detail: str = ""
    skipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "skipped": self.skipped, "detail": self.detail}


@dataclass(frozen=True)
class Verification:
    items: tuple[CheckItem, ...]
    started_at: float
    duration: float

    @property
    def ok(self) -> bool:
        return all(item.ok or item.skipped for item in self.items)

    @property
    def failures(self) -> list[CheckItem]:
        return [item for item in self.items if not item.ok and not item.skipped]

    def summary(self) -> str:
        if self.ok:
            checked = sum(1 for item in self.items if not item.skipped)
            return f"verified: {checked} checks passed"
        return "verification failed: " + "; ".join(f"{item.name}: {item.detail}" for item in self.failures)

    def as_dicts(self) -> list[dict[str, Any]]:
        return [item.as_dict() for item in self.items]


@dataclass(frozen=True)
class Expectations:
    """What this verification must prove beyond "the service works": set by the action that ran."""

    revision: str | None = None
    reference_counts: Mapping[str, int] = field(default_factory=dict)
    count_tolerance: float = 0.0
    indexes: Sequence[str] = ()
    schema_fingerprint: str | None = None  # the schema must be exactly this one (e.g. the pre-deploy backup's)
    logs_since: float | None = None
    # "full" (the runbook's integrity_check) unless the action left the file's pages as they were proven: a
    # restart changes no page, a restore put a backup in place that integrity_check passed just before. quick_check
    # costs a seventh of it (DESIGN.md: 1.2 vs 8.6 s per GiB), which is time to recovery.
    integrity: Literal["quick", "full"] = "full"


class Verifier:
    def __init__(self, service: ServiceConfig, client: HttpClient) -> None:
        self.service = service
        self.client = client

    async def verify(self, expect: Expectations, *, wait_for_health: float | None = None) -> Verification:
        """Run the checklist. First wait (up to ``wait_for_health``, default policy.verify_timeout) for health."""
        started = time.time()
        clock = time.monotonic()
        deadline = clock + (wait_for_health if wait_for_health is not None else self.service.policy.verify_timeout)
        items = [await self._health(deadline)]
        items.extend(await asyncio.to_thread(self._database_items, expect))
        items.extend(await self._smoke())
        items.append(await self._latency_settled(deadline))
        items.append(await self._logs(expect.logs_since))
        return Verification(tuple(items), started, time.monotonic() - clock)

    async def _latency_settled(self, deadline: float) -> CheckItem:
        """A service that was just started answers its first requests slowly (cold caches, lazy imports): the
        latency item is measured again, once a second, until it passes or the verification's deadline comes."""
        while True:
            item = await self._latency()
            if item.ok or item.skipped or time.monotonic() >= deadline:
                return item
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    async def _health(self, deadline: float) -> CheckItem:
        url = self.service.base_url + self.service.health_path
        health = self.service.probes.health
        health_expectations = BodyExpectations(health.expect_json, health.expect_body_contains)
        last = "no answer"
        while True:
            try:
                response = await self.client.get(url, timeout=self.service.probes.health.timeout)
                mismatch = health_expectations.mismatch(response.body) if health_expectations else ""
                if response.status == 200 and not mismatch:
                    return CheckItem("service health", True, f"GET {self.service.health_path} returned 200")
                last = f"GET {self.service.health_path} returned {response.status}: {response.text[:200]}"
                if mismatch:
                    last = f"{UNEXPECTED_BODY}: {last}: {mismatch}"
            except HttpError as error:
                last = f"GET {self.service.health_path} failed: {type(error).__name__}: {error}"
            if time.monotonic() >= deadline:
                return CheckItem("service health", False, last)
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _database_items(self, expect: Expectations) -> list[CheckItem]:
        try:
            connection = connect_readonly(self.service.database)
        except DatabaseUnavailable as error:
            return [CheckItem("database integrity", False, str(error))]
        with contextlib.closing(connection):
            items = [_integrity(connection, expect.integrity), _foreign_keys(connection)]
            items.append(_revision(connection, expect.revision))
            if expect.reference_counts:
                items.append(_counts(connection, expect.reference_counts, expect.count_tolerance))
            if expect.indexes:
                missing = sorted(set(expect.indexes) - index_names(connection))
                detail = (
                    f"missing: {', '.join(missing)}" if missing else f"{len(expect.indexes)} expected indexes present"
                )
                items.append(CheckItem("indexes", not missing, detail))
            if expect.schema_fingerprint:
                same = schema_fingerprint(connection) == expect.schema_fingerprint
                detail = (
                    "schema as before the deploy"
                    if same
                    else "schema differs from the expected one (partial migration?)"
                )
                items.append(CheckItem("schema", same, detail))
            return items

    async def _smoke(self) -> list[CheckItem]:
        steps = self.service.verify.smoke
        if not steps:
            return [CheckItem("core functionality", True, "no smoke steps configured", skipped=True)]
        captured: dict[str, str] = {}
        items = []
        failed = False
        for step in steps:
            if failed and not step.cleanup:
                items.append(CheckItem(f"smoke: {step.name}", False, "not run: an earlier step failed", skipped=True))
                continue
            item = await self._smoke_step(step, captured)
            items.append(item)
            failed = failed or not item.ok
        return items

    async def _smoke_step(self, step: SmokeStep, captured: dict[str, str]) -> CheckItem:
        try:
            path = step.path.format_map(captured)
        except KeyError as missing:
            return CheckItem(
                f"smoke: {step.name}", False, f"needs {missing} from an earlier step", skipped=step.cleanup
            )
        try:
            response = await self.client.request(
                step.method,
                self.service.base_url + path,
                json=step.json_body,
                timeout=self.service.probes.latency.timeout,
            )
        except HttpError as error:
            return CheckItem(f"smoke: {step.name}", False, f"{step.method} {path}: {type(error).__name__}: {error}")
        if response.status not in step.expect_status:
            return CheckItem(
                f"smoke: {step.name}",
                False,
                f"{step.method} {path} returned {response.status}, expected {step.expect_status}: "
                f"{response.text[:200]}",
            )
        mismatch = BodyExpectations(step.expect_json, step.expect_body_contains).mismatch(response.body)
        if mismatch:
            return CheckItem(
                f"smoke: {step.name}", False, f"{UNEXPECTED_BODY}: {step.method} {path} returned {mismatch}"
            )
        for name, key in step.capture.items():
            try:
                captured[name] = str(response.json()[key])
            except (ValueError, KeyError, TypeError):
                return CheckItem(f"smoke: {step.name}", False, f"response has no {key!r} to capture as {name!r}")
        return CheckItem(f"smoke: {step.name}", True, f"{step.method} {path} returned {response.status}")

    async def _latency(self) -> CheckItem:
        paths = self.service.verify.latency_paths
        if paths is None:
            paths = self.service.probes.latency.paths
        if not paths:
            return CheckItem("performance", True, "no latency paths configured", skipped=True)
        bound = self.service.verify.latency_bound
        slow = []
        timings = []
        for path in paths:
            samples = []
            for _ in range(LATENCY_SAMPLES):
                started = time.monotonic()
                try:
                    response = await self.client.get(self.service.base_url + path, timeout=max(bound * 5, 1.0))
                except HttpError as error:
                    return CheckItem("performance", False, f"GET {path}: {type(error).__name__}")
                samples.append(time.monotonic() - started)
                if response.status >= 500:
                    return CheckItem("performance", False, f"GET {path} returned {response.status}")
            median = median_of(samples)
            timings.append(f"{path} {median * 1000:.0f} ms")
            if median >= bound:
                slow.append(path)
        detail = ", ".join(timings) + f" (bound {bound * 1000:.0f} ms)"
        return CheckItem("performance", not slow, detail)

    async def _logs(self, since: float | None) -> CheckItem:
        control = self.service.control
        if not isinstance(control, SystemdControl):
            return CheckItem("logs clean", True, "service not run by systemd: no journal to read", skipped=True)
        argv = ["journalctl", "-u", control.unit, "-n", "50", "-p", "err", "--no-pager", "-q", "-o", "cat"]
        if control.user:
            argv.insert(1, "--user")
        if since is not None:
            argv += ["--since", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))]
        result = await run_command_async(argv, timeout=30)
        if result.exit_code is None or not result.ok:
            return CheckItem("logs clean", True, f"journal not readable: {result.summary()}", skipped=True)
        errors = [line for line in result.output_tail.splitlines() if line.strip()]
        if errors:
            return CheckItem("logs clean", False, f"{len(errors)} error lines, last: {errors[-1][:200]}")
        return CheckItem("logs clean", True, f"no errors in journalctl -u {control.unit} -n 50")


def _integrity(connection: sqlite3.Connection, check: str) -> CheckItem:
    pragma = "quick_check" if check == "quick" else "integrity_check"
    deadline = time.monotonic() + INTEGRITY_TIMEOUT
    connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 10000)
    try:
        rows = [str(row[0]) for row in connection.execute(f"PRAGMA {pragma}(20)")]
    except sqlite3.DatabaseError as error:
        return CheckItem("database integrity", False, f"{pragma} failed: {error}")
    finally:
        connection.set_progress_handler(None, 0)
    if rows == ["ok"]:
        return CheckItem("database integrity", True, f"PRAGMA {pragma}: ok")
    return CheckItem("database integrity", False, "; ".join(rows[:3]))


def _foreign_keys(connection: sqlite3.Connection) -> CheckItem:
    try:
        rows = connection.execute("PRAGMA foreign_key_check").fetchmany(20)
    except sqlite3.DatabaseError as error:
        return CheckItem("foreign keys", False, f"foreign_key_check failed: {error}")
    if not rows:
        return CheckItem("foreign keys", True, "PRAGMA foreign_key_check: no violations")
    shown = ", ".join(f"{table} row {rowid} -> {parent}" for table, rowid, parent, _ in rows[:3])
    return CheckItem("foreign keys", False, f"{len(rows)}+ violations: {shown}")


def _revision(connection: sqlite3.Connection, expected: str | None) -> CheckItem:
    try:
        current = read_revision(connection)
    except sqlite3.DatabaseError as error:
        return CheckItem("migration version", False, f"cannot read alembic_version: {error}")
    if expected is None:
        return CheckItem("migration version", current is not None, f"alembic current: {current}")
    return CheckItem("migration version", current == expected, f"alembic current: {current}, expected {expected}")


def _counts(connection: sqlite3.Connection, reference: Mapping[str, int], tolerance: float) -> CheckItem:
    try:
        counts = count_rows(connection, reference)
    except sqlite3.DatabaseError as error:
        return CheckItem("data", False, f"cannot count rows: {error}")
    short = []
    for table, expected in reference.items():
        actual = counts.get(table)
        if actual is None or actual < expected * (1 - tolerance):
            short.append(f"{table} {actual} < {expected}")
    detail = ", ".join(f"{table} {counts.get(table)}" for table in reference)
    return CheckItem("data", not short, f"short: {', '.join(short)}" if short else f"rows intact: {detail}")


def median_of(samples: Sequence[float]) -> float:
    """The median of ``samples`` (not empty), as ``statistics.median`` computes it: the middle value, or the mean
    of the two middle ones. Not statistics itself: it loads fractions and decimal (~0.7 MiB of the daemon's RSS
    for its whole life, bench/RESULTS.md "Issue 13, svcmem") for this one call."""
    ordered = sorted(samples)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
