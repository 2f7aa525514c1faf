"""`vbrpg-example`: run the example service, migrate and seed its database, and inject the runbook's faults.

Library code raises typed errors (errors.py); only `main` turns them into a message and an exit code.
Heavy imports (FastAPI, uvicorn, Alembic) happen inside the commands that use them, so `stop`, `kill`
and `lock` start fast.
"""

import argparse
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vbrpg_example import __version__
from vbrpg_example.app_dir import AppDir, init_app_dir
from vbrpg_example.errors import ExitCode, UsageError, VbrpgError
from vbrpg_example.faults.catalog import FAULTS, fault_named
from vbrpg_example.faults.corruption import DEFAULT_PAGES, DEFAULT_TABLE

Handler = Callable[[argparse.Namespace], int]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_STOP_TIMEOUT_SECONDS = 10.0
DEFAULT_START_TIMEOUT_SECONDS = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    handler: Handler = arguments.handler
    try:
        return handler(arguments)
    except VbrpgError as error:
        print(f"vbrpg-example: {error}", file=sys.stderr)
        return int(error.exit_code)
    except sqlite3.Error as error:
        print(f"vbrpg-example: database error: {error}", file=sys.stderr)
        return int(ExitCode.ERROR)
    except KeyboardInterrupt:
        return 128 + 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vbrpg-example",
        description="The VBRPG example service (rollbackd's demo target): serve it, migrate and seed its "
        "SQLite database, and inject the rollback runbook's bad deployments.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 migration failed, 4 service failed, 5 not running.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser(
        "init-app",
        help="copy the app dir template (alembic.ini + alembic/) to DIR",
        description=_doc(init_app),
    )
    init.add_argument("directory", metavar="DIR", type=Path, help="where to create the app dir")
    init.add_argument("--db", type=Path, metavar="PATH", help="write this database into alembic.ini's sqlalchemy.url")
    init.add_argument("--force", action="store_true", help="copy over a non-empty DIR")
    init.set_defaults(handler=init_app)

    serve = commands.add_parser(
        "serve", help="run the service (foreground, or --detach)", description=_doc(serve_command)
    )
    _add_serve_options(serve)
    serve.add_argument("--detach", action="store_true", help="start in the background; needs --pidfile")
    serve.set_defaults(handler=serve_command)

    stop = commands.add_parser("stop", help="stop the service named by a pidfile", description=_doc(stop_command))
    stop.add_argument("--pidfile", type=Path, metavar="FILE", required=True, help="the service's pidfile")
    _add_stop_timeout(stop)
    stop.set_defaults(handler=stop_command)

    restart = commands.add_parser(
        "restart", help="stop, then serve --detach with the given options", description=_doc(restart_command)
    )
    _add_serve_options(restart)
    _add_stop_timeout(restart)
    restart.set_defaults(handler=restart_command)

    migrate = commands.add_parser(
        "migrate", help="upgrade or downgrade the database", description=_doc(migrate_command)
    )
    _add_database_option(migrate)
    _add_app_dir_option(migrate)
    migrate.add_argument(
        "target",
        nargs="?",
        default="head",
        metavar="TARGET",
        help="head (default), base, a revision id, -N (N steps down) or +N; the direction is worked out",
    )
    migrate.add_argument(
        "--journal-mode",
        choices=("wal", "delete"),
        default="wal",
        help="journal mode of a database this migration creates (default: wal); existing ones keep theirs",
    )
    migrate.set_defaults(handler=migrate_command)

    seed = commands.add_parser(
        "seed", help="bulk-insert players, rooms and participants", description=_doc(seed_command)
    )
    _add_database_option(seed)
    seed.add_argument("--rooms", type=_count, metavar="N", required=True, help="rooms to add")
    seed.add_argument("--players", type=_count, metavar="N", required=True, help="players to add")
    seed.add_argument("--participants-per-room", type=_count, metavar="K", default=0, help="players seated per room")
    seed.add_argument("--agents-per-room", type=_count, metavar="K", default=0, help="AI agents seated per room")
    seed.set_defaults(handler=seed_command)

    faults = commands.add_parser("faults", help="list the faults with one-line descriptions")
    faults.set_defaults(handler=list_faults)

    fault = commands.add_parser(
        "fault", help="inject one fault (see `faults`), or `fault reset`", description=_doc(fault_command)
    )
    kinds = fault.add_subparsers(dest="fault", required=True, metavar="NAME")
    for entry in FAULTS:
        kind = kinds.add_parser(entry.name, help=entry.summary, description=f"{entry.summary}. {entry.scenario}.")
        if entry.script is not None:
            _add_database_option(kind)
            _add_app_dir_option(kind)
        if entry.name == "schema-skew":
            kind.add_argument("--stash", type=Path, metavar="DIR", help="keep a copy of the removed script here")
        elif entry.name == "corrupt":
            _add_database_option(kind)
            kind.add_argument("--table", default=DEFAULT_TABLE, help=f"core table to damage (default: {DEFAULT_TABLE})")
            kind.add_argument(
                "--pages",
                type=_positive,
                default=DEFAULT_PAGES,
                help=f"pages to damage, root included (default: {DEFAULT_PAGES})",
            )
        elif entry.name == "lock":
            _add_database_option(kind)
            kind.add_argument("--seconds", type=float, metavar="N", required=True, help="how long to hold the lock")
            kind.add_argument(
                "--busy-timeout",
                type=float,
                metavar="SECONDS",
                default=5.0,
                help="wait this long to get the lock",
            )
        elif entry.name == "kill":
            kind.add_argument("--pidfile", type=Path, metavar="FILE", required=True, help="the service's pidfile")
        kind.set_defaults(handler=fault_command)
    reset = kinds.add_parser("reset", help="remove every fault script from the app dir's versions/")
    _add_app_dir_option(reset)
    reset.set_defaults(handler=reset_command)
    return parser


def init_app(arguments: argparse.Namespace) -> int:
    """Copy the packaged app dir template (alembic.ini, alembic/env.py, script.py.mako, versions/) to DIR,
    so that `alembic -c DIR/alembic.ini upgrade head`, run from DIR, migrates the database. Fault scripts
    are only ever written into such a copy."""
    database = arguments.db.resolve() if arguments.db else None
    app_dir = init_app_dir(arguments.directory.resolve(), database, force=arguments.force)
    print(f"app dir ready at {app_dir.path}" + (f" (database {database})" if database else ""))
    return ExitCode.OK


def serve_command(arguments: argparse.Namespace) -> int:
    """Run the service under uvicorn. In the foreground it serves until SIGTERM/SIGINT; with --detach it
    starts a background process in a new session, waits until /health answers (any status) and the pidfile
    is written, then exits 0, or exits non-zero with the log's tail if the process died. Without --app-dir
    the packaged template's migration scripts are the code's."""
    database, app_dir = _database(arguments), _app_dir(arguments, read_only=True)
    if arguments.detach:
        return _start_detached(arguments, database)
    from vbrpg_example.app import ServiceSettings
    from vbrpg_example.server import serve

    settings = ServiceSettings(database, app_dir, arguments.chaos, arguments.busy_timeout)
    serve(settings, arguments.host, arguments.port, pidfile=arguments.pidfile, ready_fd=arguments.ready_fd)
    return ExitCode.OK


def stop_command(arguments: argparse.Namespace) -> int:
    """SIGTERM the service named by the pidfile, wait, and SIGKILL it after --timeout seconds. Exits 0 when
    it was not running (and says so): stopping is idempotent."""
    from vbrpg_example.service_process import stop_service

    print(stop_service(arguments.pidfile, arguments.timeout))
    return ExitCode.OK


def restart_command(arguments: argparse.Namespace) -> int:
    """`stop --pidfile F --timeout T`, then `serve --detach` with the same options. The serve options are
    not remembered from the last start: pass them again (a service manager's unit file holds them)."""
    from vbrpg_example.service_process import stop_service

    database = _database(arguments)
    print(stop_service(arguments.pidfile, arguments.timeout))
    return _start_detached(arguments, database)


def migrate_command(arguments: argparse.Namespace) -> int:
    """Migrate the database to TARGET with the app dir's scripts, upgrading or downgrading as needed.
    Alembic runs as a child process from the app dir, as a deploy runs it; its output is shown."""
    from vbrpg_example.migrate import current_revision, migrate

    database = _database(arguments)
    app_dir = _app_dir(arguments, read_only=True)
    before = current_revision(database)
    run = migrate(database, app_dir, arguments.target, journal_mode=arguments.journal_mode)
    print(run.output.rstrip())
    print(f"database {database}: {before or 'empty'} -> {current_revision(database) or 'empty'}")
    return ExitCode.OK


def seed_command(arguments: argparse.Namespace) -> int:
    """Bulk-insert players and rooms, seating --participants-per-room of the new players (the first hosts)
    and --agents-per-room AI agents in each new room, in one transaction. The schema must be at head."""
    from vbrpg_example.seeding import seed

    database = _database(arguments)
    added, totals = seed(
        database,
        arguments.rooms,
        arguments.players,
        arguments.participants_per_room,
        arguments.agents_per_room,
    )
    print(f"added: {added}")
    print(f"now:   {totals}")
    return ExitCode.OK


def list_faults(_: argparse.Namespace) -> int:
    width = max(len(fault.name) for fault in FAULTS)
    for fault in FAULTS:
        revision = f" [{fault.revision}]" if fault.revision else ""
        print(f"{fault.name:<{width}}  {fault.summary}{revision}")
    return ExitCode.OK


def fault_command(arguments: argparse.Namespace) -> int:
    """Inject one of the runbook's bad deployments. Migration faults copy their script into the app dir's
    versions/ on top of its head and run `alembic upgrade head` there, as a deploy does; they need --app-dir
    (an init-app copy, never the packaged template). `fault reset` removes the scripts again."""
    from vbrpg_example.faults import injectors

    fault = fault_named(arguments.fault)
    if fault.name == "kill":
        return injectors.kill(arguments.pidfile)
    if fault.name == "lock":
        return injectors.lock(_database(arguments), arguments.seconds, arguments.busy_timeout)
    if fault.name == "corrupt":
        return injectors.corrupt(_database(arguments), arguments.table, arguments.pages)
    app_dir = _app_dir(arguments, read_only=False)
    return injectors.migration(fault, app_dir, _database(arguments), getattr(arguments, "stash", None))


def reset_command(arguments: argparse.Namespace) -> int:
    from vbrpg_example.faults.migration_faults import reset, writable_app_dir

    app_dir = writable_app_dir(_app_dir(arguments, read_only=False))
    removed = reset(app_dir)
    for script in removed:
        print(f"removed {script}")
    print(f"{len(removed)} fault script(s) removed; the database keeps whatever they did")
    return ExitCode.OK


def _start_detached(arguments: argparse.Namespace, database: Path) -> int:
    from vbrpg_example.service_process import start_detached

    if arguments.pidfile is None:
        raise UsageError("--detach needs --pidfile, so that stop and restart can find the service")
    pidfile = arguments.pidfile.resolve()
    log_file = (arguments.log_file or pidfile.with_name(f"{pidfile.name}.log")).resolve()
    serve_arguments = [
        "--db",
        str(database),
        "--host",
        arguments.host,
        "--port",
        str(arguments.port),
        "--busy-timeout",
        str(arguments.busy_timeout),
        "--pidfile",
        str(pidfile),
    ]
    if arguments.app_dir is not None:
        serve_arguments += ["--app-dir", str(arguments.app_dir.resolve())]
    if arguments.chaos:
        serve_arguments.append("--chaos")
    health_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(arguments.host, arguments.host)  # noqa: S104
    if ":" in health_host:
        health_host = f"[{health_host}]"
    health_url = f"http://{health_host}:{arguments.port}/health"
    pid = start_detached(serve_arguments, pidfile, log_file, health_url, arguments.start_timeout)
    print(f"started pid {pid} on {arguments.host}:{arguments.port} (pidfile {pidfile}, log {log_file})")
    return ExitCode.OK


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    _add_database_option(parser)
    _add_app_dir_option(parser)
    parser.add_argument(
        "--host", metavar="ADDRESS", default=DEFAULT_HOST, help=f"address to bind (default: {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port",
        type=int,
        metavar="PORT",
        default=DEFAULT_PORT,
        help=f"port to bind (default: {DEFAULT_PORT})",
    )
    parser.add_argument("--chaos", action="store_true", help="enable POST/DELETE /chaos to inject noise")
    parser.add_argument(
        "--busy-timeout",
        type=float,
        metavar="SECONDS",
        default=5.0,
        help="seconds a query waits on a locked database (default: 5)",
    )
    parser.add_argument("--pidfile", type=Path, metavar="FILE", help="write the serving process's pid here")
    parser.add_argument(
        "--log-file", type=Path, metavar="FILE", help="with --detach: service output (default: PIDFILE.log)"
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_START_TIMEOUT_SECONDS,
        help=f"with --detach: seconds to wait for /health (default: {DEFAULT_START_TIMEOUT_SECONDS:g})",
    )
    # Internal: the pipe on which a detached child reports that its port is bound.
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)


def _add_stop_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_STOP_TIMEOUT_SECONDS,
        help=f"seconds between SIGTERM and SIGKILL (default: {DEFAULT_STOP_TIMEOUT_SECONDS:g})",
    )


def _add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        default=os.environ.get("VBRPG_DB"),
        help="the SQLite database file (default: $VBRPG_DB)",
    )


def _add_app_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app-dir",
        type=Path,
        metavar="DIR",
        default=os.environ.get("VBRPG_APP_DIR"),
        help="app dir made by init-app (default: $VBRPG_APP_DIR; read-only commands fall back to the "
        "packaged template)",
    )


def _database(arguments: argparse.Namespace) -> Path:
    if arguments.db is None:
        raise UsageError("--db is required (or set VBRPG_DB)")
    return Path(arguments.db).resolve()


def _app_dir(arguments: argparse.Namespace, *, read_only: bool) -> AppDir:
    if arguments.app_dir is None:
        if not read_only:
            raise UsageError("this command writes migration scripts: pass --app-dir (made by init-app)")
        return AppDir.packaged()
    return AppDir(Path(arguments.app_dir).resolve()).validate()


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _doc(function: Callable[..., object]) -> str:
    """Use a command's docstring as its --help description, so the two cannot drift apart."""
    return " ".join((function.__doc__ or "").split())
