"""Alembic environment of the VBRPG example.

The database comes from `-x db=PATH`, else the VBRPG_DB environment variable, else alembic.ini's
sqlalchemy.url. Foreign keys are enforced on the migration connection as in the service, so a migration
that breaks them fails (the runbook's Scenario 1) instead of leaving orphans behind.

SQLite DDL is not transactional here: Alembic's SQLite dialect declares no transactional DDL and the sqlite3
driver runs each CREATE/DROP/ALTER outside a transaction, so a migration that fails half way keeps the
DDL it ran before the failure, as a real deploy would. New database files are created in WAL mode
(`-x journal_mode=delete`, or VBRPG_JOURNAL_MODE=delete, for a rollback journal); an existing file keeps
its journal mode.
"""

import os
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, event, pool
from sqlalchemy.engine import make_url

from vbrpg_example.models import Base

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata
x_arguments = context.get_x_argument(as_dictionary=True)
JOURNAL_MODES = {"wal": "PRAGMA journal_mode = WAL", "delete": "PRAGMA journal_mode = DELETE"}
BUSY_TIMEOUT_SECONDS = 5.0


def database_url() -> str:
    """Return the database URL, in the documented order of precedence."""
    database = x_arguments.get("db") or os.environ.get("VBRPG_DB")
    if database:
        return f"sqlite:///{Path(database).resolve()}"
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass -x db=PATH, set VBRPG_DB, or set sqlalchemy.url in alembic.ini")
    return url


def journal_mode_statement() -> str:
    mode = (x_arguments.get("journal_mode") or os.environ.get("VBRPG_JOURNAL_MODE") or "wal").lower()
    if mode not in JOURNAL_MODES:
        raise RuntimeError(f"journal_mode must be one of {', '.join(JOURNAL_MODES)}, not {mode!r}")
    return JOURNAL_MODES[mode]


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = database_url()
    path = make_url(url).database
    is_new = not path or not os.path.exists(path) or os.path.getsize(path) == 0
    journal_mode = journal_mode_statement()
    engine = create_engine(url, poolclass=pool.NullPool, connect_args={"timeout": BUSY_TIMEOUT_SECONDS})

    @event.listens_for(engine, "connect")
    def enable_foreign_keys(dbapi_connection, _connection_record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        if is_new:
            cursor.execute(journal_mode)
        cursor.close()

    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
