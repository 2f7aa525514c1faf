"""`rollbackd rehearse`: the runbook's "test migrations locally" (upgrade, downgrade -1, upgrade) on real data.

The live database is copied with the online backup API (verified, as every backup) into a scratch dir under the
state dir; the live file, its -wal/-shm and the backup dir are never written. The service's own Alembic then runs
against the copy, once per pending revision, oldest first: ``upgrade REV``, checks, ``downgrade`` back to the
revision before, checks, ``upgrade REV`` again, checks. Each revision is reported as reversible or not (the
downgrade exits 0 and the schema fingerprint is back), with the rows the upgrade dropped (past the data-loss
rule's threshold: data loss), the rows the downgrade lost, the indexes added and dropped, and how long each step
took on this data.

Before anything runs against the copy, rollbackd proves that the service's env.py reads the database the
temporary ini names: it writes a canary database at the copy's path whose ``alembic_version`` holds a random
revision and runs ``alembic current``; only when Alembic reports that canary (it cannot locate it) is the copy
put there. An env.py that ignores the ini (a hard-coded path, a variable rollbackd does not recognise) would
otherwise migrate the live database: the rehearsal refuses instead. Afterwards, the live database's revision and
schema are compared with what they were before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rollbackd.actions.alembic_runner import AlembicRunner
from rollbackd.backup.manifest import manifest_path
from rollbackd.backup.snapshot import snapshot_database
from rollbackd.config.model import ServiceConfig
from rollbackd.deploy.inspection import (
    DatabaseState,
    inspect_database,
    loss_ratios,
    rows_lost,
    schema_difference,
)
from rollbackd.deploy.live_files import READ_PROTOCOL, LiveMarks, mark_live
from rollbackd.deploy.plan import UpgradePlan, data_loss_threshold, plan_upgrade
from rollbackd.host.commands import CommandResult
from rollbackd.host.processes import pid_alive
from rollbackd.state.state_dir import StateDir
from rollbackd.state.vault import Vault
from rollbackd.target.database import DatabaseUnavailable

Say = Callable[[str], None]
CANARY_PREFIX = "rollbackd_canary_"
OUTPUT_LINES = 8  # lines of Alembic's output printed under a failed step (the JSON keeps the whole tail)
ERROR_LINE = re.compile(r"\b\w*(Error|Exception|FAILED)\b[:)]")


class RehearsalRefused(Exception):
    """The rehearsal cannot be run safely (Alembic would not migrate the scratch copy); nothing was migrated."""


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class StepRun:
    """One Alembic command on the copy and the checks after it."""

    name: str  # upgrade | downgrade | upgrade again
    target: str
    exit_code: int | None
    seconds: float
    output_tail: str  # the end of Alembic's output, kept when the command failed
    state: DatabaseState | None

    @property
    def exited_ok(self) -> bool:
        return self.exit_code == 0

    @property
    def ok(self) -> bool:
        return self.exited_ok and self.state is not None and self.state.sound

    def describe(self) -> str:
        if not self.exited_ok:
            return f"{self.name} {self.target} FAILED (exit {self.exit_code}, {self.seconds:.1f}s)"
        if self.state is not None and not self.state.sound:
            return f"{self.name} {self.target} ok ({self.seconds:.1f}s) but {'; '.join(self.state.problems())}"
        return f"{self.name} ok ({self.seconds:.1f}s)"

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "target": self.target,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "output_tail": self.output_tail,
            "checks": self.state.to_json() if self.state is not None else None,
        }


@dataclass(frozen=True)
class RevisionRehearsal:
    revision: str
    from_revision: str | None
    script: str
    upgrade: StepRun
    downgrade: StepRun | None = None
    upgrade_again: StepRun | None = None
    reversible: bool | None = None  # None: not reached (the upgrade failed)
    rows_lost_by_upgrade: dict[str, int] = field(default_factory=dict)
    data_loss: dict[str, float] = field(default_factory=dict)  # tables whose drop reached the threshold
    rows_lost_by_downgrade: dict[str, int] = field(default_factory=dict)
    indexes_added: tuple[str, ...] = ()
    indexes_dropped: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "from_revision": self.from_revision,
            "script": self.script,
            "ok": self.ok,
            "reversible": self.reversible,
            "rows_lost_by_upgrade": self.rows_lost_by_upgrade,
            "data_loss": {table: round(ratio, 4) for table, ratio in self.data_loss.items()},
            "rows_lost_by_downgrade": self.rows_lost_by_downgrade,
            "indexes_added": list(self.indexes_added),
            "indexes_dropped": list(self.indexes_dropped),
            "steps": [step.to_json() for step in (self.upgrade, self.downgrade, self.upgrade_again) if step],
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class RehearsalReport:
    service: str
    database: str
    from_revision: str | None
    target: str
    pending: tuple[str, ...]
    data_loss_threshold: float
    revisions: tuple[RevisionRehearsal, ...] = ()
    not_rehearsed: tuple[str, ...] = ()
    copy_seconds: float = 0.0
    copy_bytes: int = 0
    live_written_meanwhile: tuple[str, ...] = ()  # live files whose bytes changed (the service writing)
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems and not self.not_rehearsed and all(revision.ok for revision in self.revisions)

    def summary(self) -> str:
        if not self.pending:
            return f"nothing to rehearse: the database is at {self.target}"
        failed = [revision for revision in self.revisions if not revision.ok]
        if self.ok:
            return f"rehearsal passed: {len(self.revisions)} revision(s) up, down and up again on a copy of the data"
        parts = [f"{revision.revision}: {revision.problems[0]}" for revision in failed]
        parts += list(self.problems)
        if self.not_rehearsed:
            parts.append(f"not rehearsed: {', '.join(self.not_rehearsed)}")
        return "rehearsal FAILED: " + "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "ok": self.ok,
            "summary": self.summary(),
            "database": self.database,
            "from_revision": self.from_revision,
            "target": self.target,
            "pending": list(self.pending),
            "data_loss_threshold": self.data_loss_threshold,
            "copy": {"seconds": round(self.copy_seconds, 3), "bytes": self.copy_bytes},
            "revisions": [revision.to_json() for revision in self.revisions],
            "not_rehearsed": list(self.not_rehearsed),
            "live_written_meanwhile": list(self.live_written_meanwhile),
            "problems": list(self.problems),
        }


async def rehearse(
    service: ServiceConfig,
    *,
    state_dir: StateDir,
    vault: Vault,
    to: str | None = None,
    say: Say = _quiet,
) -> RehearsalReport:
    """Rehearse the upgrade to ``to`` (default: the code's head) on a scratch copy; the copy is always removed.

    Raise DatabaseUnavailable when the live database cannot be read, PlanError for a bad target, BackupError
    when the copy cannot be taken, RehearsalRefused when Alembic cannot be shown to use the copy.
    """
    before = await asyncio.to_thread(mark_live, service.database)
    current = before.revision
    plan = plan_upgrade(service, vault, current, to)
    threshold = data_loss_threshold(service)
    if plan.nothing_to_do:
        say(f"nothing to rehearse: {service.database.name} is already at {plan.target}")
        return RehearsalReport(service.name, str(service.database), current, plan.target, (), threshold)
    say(f"pending: {' → '.join(plan.pending)} (from {current or 'an empty database'})")
    await asyncio.to_thread(state_dir.ensure)
    await asyncio.to_thread(remove_stale_workspaces, state_dir.scratch, service.name)
    prefix = f"rehearse-{service.name}-{os.getpid()}-"
    workspace = Path(tempfile.mkdtemp(prefix=prefix, dir=state_dir.scratch))
    try:
        report = await _Rehearsal(service, vault, workspace, threshold, say).run(plan, to)
    finally:
        await asyncio.to_thread(shutil.rmtree, workspace, True)
    after = await asyncio.to_thread(mark_live, service.database)
    return _with_live_check(report, before, after, say)


def _with_live_check(report: RehearsalReport, before: LiveMarks, after: LiveMarks, say: Say) -> RehearsalReport:
    moved = before.schema_changes(after)
    written = tuple(before.byte_changes(after))
    problems = list(report.problems)
    if moved:
        problems.append(
            f"the LIVE database changed during the rehearsal ({'; '.join(moved)}): something other than the "
            "rehearsal migrated it, or the service's env.py escaped the scratch copy; look at it now"
        )
        say(problems[-1])
    elif set(written) <= READ_PROTOCOL and written:
        say(f"the live database is byte-identical to before the rehearsal; {' and '.join(written)}")
    elif written:
        say(f"the live database was written meanwhile ({', '.join(written)}): revision and schema unchanged")
    else:
        say("the live database is byte-identical to before the rehearsal")
    return replace(report, live_written_meanwhile=written, problems=tuple(problems))


class _Rehearsal:
    def __init__(self, service: ServiceConfig, vault: Vault, workspace: Path, threshold: float, say: Say) -> None:
        self.service = service
        self.threshold = threshold
        self.say = say
        self.copy = workspace / service.database.name
        self.tables = list(service.probes.rows.tables)
        # As in migrate: upgrades see the code's scripts only, downgrades also the vault's.
        self.upgrader = AlembicRunner(service, workspace, database=self.copy)
        self.downgrader = AlembicRunner(service, workspace, vault, database=self.copy)
        self.workspace = workspace
        self.vault = vault

    async def run(self, plan: UpgradePlan, to: str | None) -> RehearsalReport:
        await self.prove_target()
        started = time.monotonic()
        revision, size = await asyncio.to_thread(self.copy_live)
        copy_seconds = time.monotonic() - started
        self.say(
            f"copied {self.service.database.name} ({size / 1024**2:.1f} MiB, revision {revision}) "
            f"to the scratch dir in {copy_seconds:.2f}s"
        )
        if revision != plan.from_revision:  # a deploy moved the live database meanwhile: plan from the copy
            plan = plan_upgrade(self.service, self.vault, revision, to)
        results: list[RevisionRehearsal] = []
        state = await self.inspect()
        for position, revision_id in enumerate(plan.pending):
            result, state_after = await self.rehearse_one(revision_id, plan.scripts.get(revision_id, "?"), state)
            results.append(result)
            if state_after is None:
                rest = plan.pending[position + 1 :]
                if rest:
                    self.say(f"not rehearsed (the copy is no longer at a known state): {', '.join(rest)}")
                return self.report(plan, results, rest, copy_seconds, size)
            state = state_after
        return self.report(plan, results, (), copy_seconds, size)

    def report(
        self,
        plan: UpgradePlan,
        results: list[RevisionRehearsal],
        rest: tuple[str, ...],
        copy_seconds: float,
        size: int,
    ) -> RehearsalReport:
        return RehearsalReport(
            self.service.name,
            str(self.service.database),
            plan.from_revision,
            plan.target,
            plan.pending,
            self.threshold,
            tuple(results),
            rest,
            copy_seconds,
            size,
        )

    # -- proving where Alembic goes -----------------------------------------------------------------------

    async def prove_target(self) -> None:
        """Show that the service's Alembic, run as the rehearsal runs it, reads the database at ``self.copy``."""
        canary = CANARY_PREFIX + secrets.token_hex(6)
        await asyncio.to_thread(_write_canary, self.copy, canary)
        try:
            result = await self.upgrader.run("current")
        finally:
            await asyncio.to_thread(_remove_database, self.copy)
        if result.exit_code is None:
            raise RehearsalRefused(f"cannot run the service's Alembic: {result.summary()}")
        if canary not in result.output_tail:
            raise RehearsalRefused(
                "refusing to rehearse: the service's Alembic did not read the scratch copy. `alembic current` with "
                f"sqlalchemy.url = sqlite:///{self.copy} did not report the canary revision written there "
                f"({result.summary()}; it said: {_last_lines(result.output_tail, 3) or 'nothing'}). Its env.py takes "
                "the database from somewhere else; make it honour sqlalchemy.url (or read the path from an "
                "environment variable or -x argument that names the database file, which rollbackd rewrites)"
            )
        self.say("proved: the service's Alembic reads the scratch copy, not the live database")

    def copy_live(self) -> tuple[str | None, int]:
        """Copy the live database to ``self.copy`` with the online backup API; return its revision and size."""
        staging = self.workspace / "staging"
        result = snapshot_database(
            self.service.database,
            staging,
            tables=self.tables,
            reason="manual",
            min_free_bytes=self.service.backups.min_free_bytes,
            min_free_ratio=self.service.backups.min_free_ratio,
            timeout=self.service.backups.timeout,
        )
        manifest = result.manifest
        if manifest.journal_mode == "wal":  # the copy is left in rollback-journal mode; rehearse as it runs live
            with contextlib.closing(sqlite3.connect(result.path)) as connection:
                connection.execute("PRAGMA journal_mode = WAL")
        os.replace(result.path, self.copy)
        manifest_path(result.path).unlink(missing_ok=True)
        return manifest.revision, manifest.size_bytes

    # -- one revision ---------------------------------------------------------------------------------------

    async def rehearse_one(
        self, revision: str, script: str, before: DatabaseState
    ) -> tuple[RevisionRehearsal, DatabaseState | None]:
        """Up, down, up again. Return the result and the copy's state after it (None: unknown, stop here)."""
        start = before.revision
        label = f"{revision} ({script})"
        upgrade = await self.step("upgrade", revision)
        if not upgrade.exited_ok or upgrade.state is None:
            problem = f"upgrade failed (exit {upgrade.exit_code}): {error_line(upgrade.output_tail)}"
            if upgrade.state is not None and upgrade.state.schema_fingerprint != before.schema_fingerprint:
                problem += f"; it left a partial schema behind ({schema_difference(before, upgrade.state)})"
            self.say(f"{label}: {upgrade.describe()}\n{_indent(_last_lines(upgrade.output_tail, OUTPUT_LINES))}")
            self.say(f"{label}: {problem}")
            return RevisionRehearsal(revision, start, script, upgrade, problems=(problem,)), None
        after_up = upgrade.state
        problems = [f"after the upgrade: {problem}" for problem in after_up.problems()]
        lost_up = rows_lost(before.row_counts, after_up.row_counts)
        data_loss = {
            table: ratio for table, ratio in loss_ratios(before.row_counts, lost_up).items() if ratio >= self.threshold
        }
        if data_loss:
            described = ", ".join(
                f"{table} {before.row_counts[table]} → {after_up.row_counts[table]}" for table in sorted(data_loss)
            )
            problems.append(f"DATA LOSS: the upgrade dropped {described} (threshold {self.threshold:.0%})")
        added = tuple(sorted(after_up.indexes - before.indexes))
        dropped = tuple(sorted(before.indexes - after_up.indexes))
        self.say(f"{label}: {upgrade.describe()}{_rows_text(lost_up, 'the upgrade')}{_index_text(added, dropped)}")

        down_target = start if start and "+" not in start else ("base" if start is None else "-1")
        downgrade = await self.step("downgrade", down_target)
        if not downgrade.exited_ok or downgrade.state is None:
            problems.append(
                f"not reversible: downgrade to {down_target} failed (exit {downgrade.exit_code}): "
                f"{error_line(downgrade.output_tail)}"
            )
            self.say(f"{label}: {downgrade.describe()}\n{_indent(_last_lines(downgrade.output_tail, OUTPUT_LINES))}")
            self.say(f"{label}: {problems[-1]}")
            result = RevisionRehearsal(
                revision, start, script, upgrade, downgrade, None, False, lost_up, data_loss, {}, added, dropped,
                tuple(problems),
            )  # fmt: skip
            return result, None
        after_down = downgrade.state
        reversible = after_down.schema_fingerprint == before.schema_fingerprint
        if not reversible:
            problems.append(
                f"not reversible: after the downgrade the schema differs from before the upgrade "
                f"({schema_difference(before, after_down)})"
            )
        problems += [f"after the downgrade: {problem}" for problem in after_down.problems()]
        kept = {table: _smaller(before.row_counts.get(table), after_up.row_counts.get(table)) for table in self.tables}
        lost_down = rows_lost(kept, after_down.row_counts)
        if lost_down:
            problems.append(f"the downgrade lost rows: {_counts_text(lost_down)}")
        self.say(
            f"{label}: {downgrade.describe()}, schema {'restored' if reversible else 'NOT restored'}"
            f"{_rows_text(lost_down, 'the downgrade')}"
        )

        again = await self.step("upgrade again", revision)
        if not again.exited_ok or again.state is None:
            problems.append(
                f"upgrade after the downgrade failed (exit {again.exit_code}): {error_line(again.output_tail)}"
            )
            self.say(f"{label}: {again.describe()}\n{_indent(_last_lines(again.output_tail, OUTPUT_LINES))}")
            next_state = None
        else:
            problems += [f"after the upgrade again: {problem}" for problem in again.state.problems()]
            if again.state.schema_fingerprint != after_up.schema_fingerprint:
                problems.append(
                    "the upgrade after the downgrade reached a different schema than the first "
                    f"({schema_difference(after_up, again.state)})"
                )
            self.say(f"{label}: {again.describe()}")
            next_state = again.state
        result = RevisionRehearsal(
            revision, start, script, upgrade, downgrade, again, reversible, lost_up, data_loss, lost_down, added,
            dropped, tuple(problems),
        )  # fmt: skip
        self.say(f"{label}: {'ok' if result.ok else 'FAILED: ' + '; '.join(problems)}")
        return result, next_state

    async def step(self, name: str, target: str) -> StepRun:
        if name.startswith("upgrade"):
            result: CommandResult = await self.upgrader.upgrade(target)
        else:
            result = await self.downgrader.downgrade(target)
        try:
            state: DatabaseState | None = await self.inspect()
        except (DatabaseUnavailable, sqlite3.Error):
            state = None
        tail = "" if result.ok else result.output_tail
        return StepRun(name, target, result.exit_code, result.duration, tail, state)

    async def inspect(self) -> DatabaseState:
        return await asyncio.to_thread(inspect_database, self.copy, self.tables)


def remove_stale_workspaces(scratch: Path, service: str) -> list[Path]:
    """Remove scratch copies left by rehearsals whose process died (kill -9); a live one's are kept."""
    removed = []
    for path in scratch.glob(f"rehearse-{service}-*-*"):
        pid = path.name.removeprefix(f"rehearse-{service}-").split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _write_canary(path: Path, revision: str) -> None:
    """A database holding only an ``alembic_version`` row no script knows: `alembic current` must name it."""
    _remove_database(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version VALUES (?)", (revision,))


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _smaller(first: int | None, second: int | None) -> int | None:
    if first is None or second is None:
        return None
    return min(first, second)


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{table} -{count}" for table, count in sorted(counts.items()))


def _rows_text(lost: dict[str, int], by: str) -> str:
    return f"; {by} dropped rows: {_counts_text(lost)}" if lost else ""


def _index_text(added: tuple[str, ...], dropped: tuple[str, ...]) -> str:
    parts = [f"+{name}" for name in added] + [f"-{name}" for name in dropped]
    return f"; indexes {' '.join(parts)}" if parts else ""


def error_line(output: str) -> str:
    """The line of Alembic's output that says what went wrong (the exception), else its last line."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return next((line for line in reversed(lines) if ERROR_LINE.search(line)), lines[-1] if lines else "no output")


def _last_lines(text: str, count: int) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
