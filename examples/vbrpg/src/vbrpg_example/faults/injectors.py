"""Run one fault from the command line and report what it did in the operator's terms (revisions, row
counts, query plans), so a demo shows the symptom next to the cause."""

import os
from pathlib import Path

from vbrpg_example.app_dir import AppDir
from vbrpg_example.errors import ExitCode
from vbrpg_example.faults import migration_faults
from vbrpg_example.faults.catalog import Fault
from vbrpg_example.faults.corruption import corrupt_table
from vbrpg_example.faults.write_lock import hold_write_lock
from vbrpg_example.seeding import count_rows
from vbrpg_example.service_process import kill_service
from vbrpg_example.sqlite_connection import connect

ROOM_LOOKUP = "SELECT * FROM game_room_participants WHERE room_id = 1"


def migration(fault: Fault, app_dir: AppDir, database: Path, stash: Path | None = None) -> int:
    """Inject a migration fault; exit non-zero (MIGRATION_FAILED) when its upgrade fails."""
    app_dir = migration_faults.writable_app_dir(app_dir)
    before = _counts(database) if fault.name == "data-loss" else None
    injection = migration_faults.inject(fault, app_dir, database)
    print(injection.alembic.output.rstrip())
    print(
        f"fault {fault.name}: {injection.script_path.name} on top of {injection.down_revision}; "
        f"database {injection.revision_before} -> {injection.revision_after}"
    )
    migration_faults.require_success(injection)
    if fault.name == "schema-skew":
        stashed = migration_faults.remove_script(injection, stash)
        kept = f", a copy kept at {stashed}" if stashed else ""
        print(f"removed {injection.script_path.name} from versions/ as a code rollback would{kept}")
    elif before is not None:
        print(f"rows before: {before}\nrows after:  {_counts(database)}")
    elif fault.name == "drop-index":
        print(f"EXPLAIN QUERY PLAN {ROOM_LOOKUP}: {_query_plan(database)}")
    return ExitCode.OK


def corrupt(database: Path, table: str, pages: int) -> int:
    corruption = corrupt_table(database, table, pages)
    page_list = ", ".join(str(page) for page in corruption.pages)
    size = corruption.page_size
    print(f"fault corrupt: overwrote page(s) {page_list} of {table} ({size} bytes each) in {database}")
    return ExitCode.OK


def lock(database: Path, seconds: float, busy_timeout_seconds: float) -> int:
    def announce(message: str) -> None:
        print(f"fault lock: pid {os.getpid()} {message}", flush=True)

    hold_write_lock(database, seconds, busy_timeout_seconds, announce)
    return ExitCode.OK


def kill(pidfile: Path) -> int:
    pid = kill_service(pidfile)
    print(f"fault kill: sent SIGKILL to pid {pid}; it is gone, its pidfile {pidfile} stays as a crash leaves it")
    return ExitCode.OK


def _counts(database: Path) -> str:
    connection = connect(database)
    try:
        return str(count_rows(connection))
    finally:
        connection.close()


def _query_plan(database: Path) -> str:
    connection = connect(database)
    try:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {ROOM_LOOKUP}").fetchall()  # noqa: S608 - constant
    finally:
        connection.close()
    return "; ".join(str(row[-1]) for row in rows)
