"""`rollbackd backup`, `rollbackd backups [list|verify|prune|drill]`, `rollbackd restore`.

The runbook's backup section by hand: take a verified backup now (the deploy script's ``BACKUP_DB=true`` hook is
``rollbackd backup --reason pre-deploy``), see which backups exist and which can be trusted, prune, drill, and
restore one the safe way. Every error is one line and a named exit code; ``--json`` prints for scripts.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollbackd.cli.common import Subcommands, add_command, load_cli_config, print_json
from rollbackd.cli.progress import PhaseProgress
from rollbackd.cli.times import table_time
from rollbackd.exit_codes import ExitCode

if TYPE_CHECKING:  # the rest load when a handler runs, so the parser stays light (cli/__init__.py)
    from rollbackd.actions.manual import ManualRequest
    from rollbackd.backup.catalog import BackupEntry
    from rollbackd.backup.restore import RestoreError, RestoreReport, RestoreStep
    from rollbackd.config.model import Config, ServiceConfig
    from rollbackd.replication.pause import ReplicationPause
    from rollbackd.state.service_lock import ServiceLock
    from rollbackd.state.state_dir import StateDir
    from rollbackd.target.control import ServiceControl

LOCK_WAIT = 60.0  # seconds a CLI command waits for the daemon's backup or another action to finish
# "replication": replication could not be paused for a swap (the daemon answered but did not pause its child).
UNAVAILABLE_REASONS = (
    "disk_full",
    "low_space",
    "source_unavailable",
    "dir_unwritable",
    "no_space",
    "no_backup",
    "replication",
)
BACKUPS_ACTIONS = ("list", "verify", "prune", "drill")


class CommandFailed(Exception):
    """A one-line error for the user, with the exit code to leave with."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


def register(commands: Subcommands) -> None:
    backup = add_command(commands, "backup", "take a verified backup now", _guarded("backup", run_backup))
    backup.add_argument("service", nargs="?", help="service name (optional when the config has one)")
    backup.add_argument(
        "--reason",
        choices=("manual", "pre-deploy"),
        default="manual",
        help="pre-deploy: the deploy script's hook (BACKUP_DB=true); recorded as the deploy's fallback",
    )
    backup.add_argument("--json", action="store_true", help="print the manifest as JSON")

    backups = add_command(commands, "backups", "list, verify, prune or drill backups", _guarded("backups", run_backups))
    backups.add_argument(
        "words", nargs="*", metavar="[ACTION] [SERVICE]", help=f"action: {', '.join(BACKUPS_ACTIONS)} (default list)"
    )
    backups.add_argument("--json", action="store_true", help="print JSON")
    backups.add_argument("--dry-run", action="store_true", help="prune: show what would be removed, remove nothing")
    backups.add_argument(
        "--verify",
        action="store_true",
        help="list: check every backup's sha256 and open it with SQLite (quick_check; reads them all)",
    )

    restore = add_command(
        commands, "restore", "restore a verified backup, keeping the current file", _guarded("restore", run_restore)
    )
    restore.add_argument("service", nargs="?", help="service name (optional when the config has one)")
    which = restore.add_mutually_exclusive_group()
    which.add_argument("--backup", metavar="NAME", help="the backup's file name (default: the newest verified)")
    which.add_argument("--before", metavar="TIME", help="the newest verified backup before YYYYMMDD_HHMMSS or ISO")
    which.add_argument("--revision", metavar="REV", help="the newest verified backup of this Alembic revision")
    which.add_argument(
        "--from-replica",
        action="store_true",
        help="restore a point in time from the Litestream replica (verified in scratch first; a local backup when "
        "the replica cannot give it), recorded in the history",
    )
    point = restore.add_mutually_exclusive_group()
    point.add_argument(
        "--timestamp", metavar="TIME", help="with --from-replica: the moment, ISO 8601 or YYYYMMDD_HHMMSS (UTC)"
    )
    point.add_argument(
        "--before-incident",
        metavar="N",
        type=int,
        help="with --from-replica: the last moment the database was proven good before incident N",
    )
    restore.add_argument("--dry-run", action="store_true", help="print the plan, touch nothing")
    restore.add_argument("--resume", action="store_true", help="finish or undo an interrupted restore")
    restore.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    restore.add_argument(
        "--service-stopped",
        action="store_true",
        help="you stopped the service yourself (needed with control kind 'none'); rollbackd will not start it",
    )
    restore.add_argument("--json", action="store_true", help="print the report as JSON")


def _guarded(name: str, handler: Callable[[argparse.Namespace], ExitCode]) -> Callable[[argparse.Namespace], ExitCode]:
    def run(args: argparse.Namespace) -> ExitCode:
        try:
            return handler(args)
        except CommandFailed as error:
            print(f"rollbackd {name}: {error}", file=sys.stderr)
            return error.code
        except KeyError as error:  # an unknown service name
            print(f"rollbackd {name}: {error.args[0]}", file=sys.stderr)
            return ExitCode.CONFIG
        except OSError as error:
            print(f"rollbackd {name}: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
            return ExitCode.UNAVAILABLE

    return run


# -- helpers -------------------------------------------------------------------------------------------------


def _service(config: Config, name: str | None) -> ServiceConfig:
    if name:
        return config.get_service(name)
    if len(config.service) == 1:
        return config.service[0]
    names = ", ".join(service.name for service in config.service)
    raise CommandFailed(f"the config has several services; name one of: {names}", ExitCode.CONFIG)


def _lock(config: Config, service: ServiceConfig, purpose: str, *, changes_database: bool = False) -> ServiceLock:
    from rollbackd.state.service_lock import ServiceBusy, ServiceLock

    lock = ServiceLock(config.daemon.state_dir, service.name, purpose, changes_database=changes_database)
    try:
        lock.acquire(timeout=LOCK_WAIT)
    except ServiceBusy as error:
        raise CommandFailed(f"{error} (waited {LOCK_WAIT:.0f}s)", ExitCode.UNAVAILABLE) from error
    except OSError as error:
        raise CommandFailed(
            f"cannot use the state dir {config.daemon.state_dir}: {error.strerror}", ExitCode.UNAVAILABLE
        ) from error
    return lock


def _when(moment: float, utc: bool) -> str:
    return table_time(moment, utc=utc, seconds=True)


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)


def _entry_json(entry: BackupEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "path": str(entry.path),
        "status": entry.status,
        "problem": entry.problem,
        "created_at": entry.created_at,  # print_json: ISO 8601 and created_at_epoch
        "size_bytes": entry.size_bytes,
        "manifest": entry.manifest.to_json() if entry.manifest else None,
    }


# -- rollbackd backup ----------------------------------------------------------------------------------------


def run_backup(args: argparse.Namespace) -> ExitCode:
    from rollbackd.backup.pre_deploy import PreDeployRecord, record_pre_deploy
    from rollbackd.backup.snapshot import BackupError, take_backup
    from rollbackd.state.state_dir import StateDir

    config = load_cli_config(args)
    service = _service(config, args.service)
    state_dir = StateDir(config.daemon.state_dir)
    lock = _lock(config, service, f"rollbackd backup --reason {args.reason}")
    progress = PhaseProgress() if not args.json else None
    scale = _page_size(service.database)  # the copy reports pages; the line shows bytes

    def phase(name: str) -> None:
        if progress is not None:
            progress.phase(name, scale=scale)

    try:
        result = take_backup(service, reason=args.reason, progress=progress, phase=phase)
    except BackupError as error:
        code = ExitCode.UNAVAILABLE if error.reason in UNAVAILABLE_REASONS else ExitCode.FAILED
        raise CommandFailed(f"{error} [{error.reason}]", code) from error
    finally:
        if progress is not None:
            progress.close()
        lock.release()
    manifest = result.manifest
    if args.reason == "pre-deploy":
        record = PreDeployRecord(result.path.name, manifest.revision, manifest.created_at, "cli")
        record_pre_deploy(state_dir.service_dir(service.name), record)
    if args.json:
        print_json({"path": str(result.path), **manifest.to_json()})
    else:
        rows = sum(count or 0 for count in manifest.row_counts.values())
        print(
            f"{result.path}: revision {manifest.revision}, {rows} rows, {_size(manifest.size_bytes)}, "
            f"sha256 {manifest.sha256[:12]}, {manifest.check} ok, {manifest.duration_seconds:.2f}s"
        )
    return ExitCode.OK


# -- rollbackd backups ---------------------------------------------------------------------------------------


def run_backups(args: argparse.Namespace) -> ExitCode:
    words = list(args.words)
    action = words.pop(0) if words and words[0] in BACKUPS_ACTIONS else "list"
    if len(words) > 1:
        raise CommandFailed(f"expected [ACTION] [SERVICE], got {' '.join(args.words)!r}", ExitCode.CONFIG)
    config = load_cli_config(args)
    service = _service(config, words[0] if words else None)
    if action == "list":
        return _list(service, args)
    if action == "verify":
        return _verify(service, args)
    if action == "prune":
        return _prune(config, service, args)
    return _drill(config, service, args)


def _list(service: ServiceConfig, args: argparse.Namespace) -> ExitCode:
    from rollbackd.backup.catalog import list_backups

    listing = list_backups(service.backups.dir, service.database.stem, verify=args.verify)
    if args.json:
        print_json(
            {
                "service": service.name,
                "backup_dir": str(service.backups.dir),
                "backups": [_entry_json(entry) for entry in listing.backups],
                "orphan_manifests": [str(path) for path in listing.orphan_manifests],
                "partials": [str(path) for path in listing.partials],
            }
        )
        return ExitCode.OK
    if not listing.backups:
        print(f"no backups of {service.name} in {service.backups.dir}")
    for entry in reversed(listing.backups):
        manifest = entry.manifest
        status = "verified" if entry.verified else f"UNVERIFIED: {entry.problem}"
        reason = manifest.reason if manifest else "?"
        drill = ""
        if manifest is not None and manifest.drill is not None:
            drill = f" drill {'ok' if manifest.drill.ok else 'FAILED'} {_when(manifest.drill.at, args.utc)}"
        print(
            f"{entry.name}  {_when(entry.created_at, args.utc)}  {reason:<11}  revision {entry.revision}  "
            f"{_size(entry.size_bytes)}  {status}{drill}"
        )
    for path in listing.orphan_manifests:
        print(f"note: {path.name} describes a backup that is gone (removed by `rollbackd backups prune`)")
    for path in listing.partials:
        print(f"note: {path.name} is an unfinished backup's temp file")
    return ExitCode.OK


def _verify(service: ServiceConfig, args: argparse.Namespace) -> ExitCode:
    from rollbackd.backup.catalog import list_backups, verify_backup

    listing = list_backups(service.backups.dir, service.database.stem)
    checked = [verify_backup(entry) if entry.manifest else entry for entry in listing.backups]
    if args.json:
        print_json({"service": service.name, "backups": [_entry_json(entry) for entry in checked]})
    else:
        for entry in checked:
            print(f"{entry.name}: {'ok' if entry.verified else 'UNVERIFIED: ' + entry.problem}")
    bad = [entry for entry in checked if not entry.verified]
    if bad and not args.json:
        print(f"{len(bad)} of {len(checked)} backup(s) unverified: they will never be restored", file=sys.stderr)
    return ExitCode.FAILED if bad else ExitCode.OK


def reachable_revisions(service: ServiceConfig, seen: set[str]) -> set[str]:
    """Revisions a downgrade or upgrade can reach: those in the Alembic script dir. When it cannot be read,
    every revision seen in the backups (keeping more is the safe side)."""
    try:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory(str(service.script_location))
        return {revision.revision for revision in script.walk_revisions()}
    except Exception:  # noqa: BLE001 - any failure to read the scripts falls back to keeping more
        return seen


def _prune(config: Config, service: ServiceConfig, args: argparse.Namespace) -> ExitCode:
    from rollbackd.backup.catalog import list_backups
    from rollbackd.backup.pre_deploy import pinned_pre_deploy, read_pre_deploy
    from rollbackd.backup.rotation import prune_backups
    from rollbackd.state.state_dir import StateDir

    lock = None if args.dry_run else _lock(config, service, "rollbackd backups prune")
    try:
        now = time.time()
        listing = list_backups(service.backups.dir, service.database.stem)
        seen = {entry.revision for entry in listing.verified if entry.revision}
        record = read_pre_deploy(StateDir(config.daemon.state_dir).service_dir(service.name))
        result = prune_backups(
            service,
            now=now,
            reachable_revisions=reachable_revisions(service, seen),
            pinned=pinned_pre_deploy(record, now=now, window=service.deploy.window),
            dry_run=args.dry_run,
            listing=listing,
        )
    finally:
        if lock is not None:
            lock.release()
    if args.json:
        print_json(
            {
                "service": service.name,
                "dry_run": result.dry_run,
                "decisions": [
                    {"name": d.name, "action": d.action, "reasons": list(d.reasons)} for d in result.plan.decisions
                ],
                "removed": list(result.removed),
                "orphan_manifests_removed": list(result.orphan_manifests_removed),
            }
        )
        return ExitCode.OK
    verb = "would be removed" if result.dry_run else "removed"
    for decision in result.plan.decisions:
        what = {"keep": "keep", "remove": verb, "unverified": "UNVERIFIED (left alone)"}[decision.action]
        print(f"{decision.name}: {what}: {'; '.join(decision.reasons)}")
    for name in result.orphan_manifests_removed:
        print(f"{name}: {verb} (manifest of a backup that is gone)")
    plan = result.plan
    print(f"{len(result.removed)} backup(s) {verb}, {len(plan.keep)} kept, {len(plan.unverified)} unverified")
    return ExitCode.OK


def _drill(config: Config, service: ServiceConfig, args: argparse.Namespace) -> ExitCode:
    from rollbackd.backup.catalog import NoBackup
    from rollbackd.backup.drill import run_drill
    from rollbackd.state.state_dir import StateDir

    lock = _lock(config, service, "rollbackd backups drill")
    try:
        report = run_drill(service, state_dir=StateDir(config.daemon.state_dir))
    except NoBackup as error:
        raise CommandFailed(str(error), ExitCode.UNAVAILABLE) from error
    finally:
        lock.release()
    if args.json:
        print_json({"service": service.name, **report.__dict__})
    else:
        print(f"{report.backup}: drill {'ok' if report.ok else 'FAILED'}: {report.detail} ({report.seconds:.2f}s)")
    return ExitCode.OK if report.ok else ExitCode.FAILED


# -- rollbackd restore ---------------------------------------------------------------------------------------


def run_restore(args: argparse.Namespace) -> ExitCode:
    from rollbackd.backup.catalog import parse_moment
    from rollbackd.backup.restore import RestoreError, restore_backup
    from rollbackd.state.state_dir import StateDir
    from rollbackd.target.control import ServiceControl

    config = load_cli_config(args)
    service = _service(config, args.service)
    state_dir = StateDir(config.daemon.state_dir)
    control = ServiceControl(service)
    if args.resume:
        return _resume(config, service, control, state_dir, args.json)
    if args.from_replica or args.timestamp or args.before_incident is not None:
        return _restore_from_replica(args, config, service)
    before = None
    if args.before:
        try:
            before = parse_moment(args.before)
        except ValueError as error:
            raise CommandFailed(str(error), ExitCode.CONFIG) from error
    lock = None if args.dry_run else _lock(config, service, "rollbackd restore", changes_database=True)
    try:
        entry = _choose(service, args.backup, before, args.revision)
        if not args.dry_run and not args.yes:
            _confirm(service, entry, args.utc)
        progress = PhaseProgress() if not args.json else None
        try:
            report = restore_backup(
                service,
                entry,
                control=control,
                state_dir=state_dir,
                reason="manual",
                dry_run=args.dry_run,
                service_stopped=args.service_stopped,
                progress=progress,
                on_step=None if progress is None else _step_printer(progress),
                replication=None if args.dry_run else _replication_pause(config, service),
            )
        finally:
            if progress is not None:
                progress.close()
    except RestoreError as error:
        raise _restore_failed(error) from error
    finally:
        if lock is not None:
            lock.release()
    _print_report(report, args.json, steps_printed=progress is not None and not args.dry_run)
    return ExitCode.OK


def _page_size(database: Path) -> int:
    """The database's page size from its header (bytes 16-17; 1 means 65536), to show pages copied as bytes."""
    try:
        with database.open("rb") as handle:
            header = handle.read(18)
    except OSError:
        return 4096
    size = int.from_bytes(header[16:18], "big") if len(header) == 18 else 4096
    return 65536 if size == 1 else size or 4096


def _step_printer(progress: PhaseProgress) -> Callable[[str, RestoreStep | None], None]:
    """Each restore step as it happens: its phase on the live line, then its line on stdout when it ends."""

    def on_step(name: str, step: RestoreStep | None) -> None:
        if step is None:
            progress.phase(name)
        else:
            progress.close()
            progress.print_line(_step_line(step))

    return on_step


def _step_line(step: RestoreStep) -> str:
    return f"{step.name}: {step.seconds:.2f}s{' (' + step.detail + ')' if step.detail else ''}"


def _restore_from_replica(args: argparse.Namespace, config: Config, service: ServiceConfig) -> ExitCode:
    """Through the executor, as an automatic restore: service lock, the current file kept, verification, history."""
    import asyncio

    from rollbackd.actions.manual import ManualRequest, manual_rollback
    from rollbackd.backup.catalog import parse_moment

    if not args.from_replica:
        raise CommandFailed("--timestamp and --before-incident go with --from-replica", ExitCode.CONFIG)
    if service.replication is None:
        raise CommandFailed(f"service {service.name!r} has no [service.replication] to restore from", ExitCode.CONFIG)
    if args.service_stopped:
        raise CommandFailed(
            "--from-replica stops and starts the service itself: drop --service-stopped", ExitCode.CONFIG
        )
    at = None
    if args.timestamp:
        try:
            at = parse_moment(args.timestamp)
        except ValueError as error:
            raise CommandFailed(str(error), ExitCode.CONFIG) from error
    request = ManualRequest(restore=True, from_replica=True, at=at, before_incident=args.before_incident)
    pause = None if args.dry_run else _replication_pause(config, service)
    if not args.dry_run and not args.yes:
        _confirm_replica(service, request)
    progress = None if args.json or args.dry_run else PhaseProgress()
    on_phase = None if progress is None else progress.phase
    try:
        result = asyncio.run(
            manual_rollback(config, service, request, dry_run=args.dry_run, replication=pause, on_phase=on_phase)
        )
    except LookupError as error:
        raise CommandFailed(str(error.args[0]), ExitCode.CONFIG) from error
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        print_json(result.as_dict())
    else:
        print(f"{service.name}: {'would' if args.dry_run else 'plan'}:")
        for step in result.plan:
            print(f"  - {step}")
        if result.outcome is not None:
            detail = result.outcome.detail
            print(f"{'done' if result.outcome.ok else 'FAILED'}: {result.outcome.summary}")
            refused = detail.get("replica_refused")
            if isinstance(refused, dict):
                print(f"the replica could not be used ({refused.get('reason')}): {refused.get('message')}")
            if detail.get("source"):
                print(f"source: {detail['source']}, point {detail.get('point')} ({detail.get('point_basis')})")
        if result.verification is not None:
            for item in result.verification.items:
                mark = "skip" if item.skipped else ("ok" if item.ok else "FAIL")
                print(f"  [{mark:>4}] {item.name}: {item.detail}")
        if result.incident_id is not None:
            print(f"incident {result.incident_id}: {'recovered' if result.ok else 'failed'} (rollbackd history)")
    return ExitCode.OK if args.dry_run or result.ok else ExitCode.FAILED


def _replication_pause(config: Config, service: ServiceConfig) -> ReplicationPause:
    """Litestream must never replicate across a swap it did not see (runtime/replication_hold.py)."""
    from rollbackd.runtime.replication_hold import pause_for_swap

    return pause_for_swap(config.daemon.socket_path, service)


def _confirm_replica(service: ServiceConfig, request: ManualRequest) -> None:
    if not sys.stdin.isatty():
        raise CommandFailed("refusing to restore without confirmation: pass --yes (or --dry-run)", ExitCode.CONFIG)
    answer = input(
        f"Restore {service.database} from the replica ({request.describe()})?\n"
        "The service will be stopped and the current files kept as *_corrupted_*. [y/N] "
    )
    if answer.strip().lower() not in ("y", "yes"):
        raise CommandFailed("not confirmed; nothing was touched", ExitCode.FAILED)


def _resume(
    config: Config, service: ServiceConfig, control: ServiceControl, state_dir: StateDir, as_json: bool
) -> ExitCode:
    from rollbackd.backup.restore import RestoreError, resume_interrupted_restore

    lock = _lock(config, service, "rollbackd restore --resume", changes_database=True)
    progress = None if as_json else PhaseProgress()
    try:
        report = resume_interrupted_restore(
            service,
            control=control,
            state_dir=state_dir,
            on_step=None if progress is None else _step_printer(progress),
        )
    except RestoreError as error:
        raise _restore_failed(error) from error
    finally:
        if progress is not None:
            progress.close()
        lock.release()
    if report is None:
        if as_json:
            print_json({"service": service.name, "outcome": "nothing", "message": "no interrupted restore"})
        else:
            print(f"no interrupted restore of {service.name}")
        return ExitCode.OK
    _print_report(report, as_json, steps_printed=progress is not None)
    return ExitCode.OK


def _choose(service: ServiceConfig, name: str | None, before: float | None, revision: str | None) -> BackupEntry:
    from rollbackd.backup.catalog import BackupRefused, NoBackup, choose_backup, list_backups, resolve_backup_name

    try:
        if name is not None:
            resolve_backup_name(service.backups.dir, name, service.database.stem)
        listing = list_backups(service.backups.dir, service.database.stem)
        return choose_backup(listing, name=name, before=before, revision=revision)
    except BackupRefused as error:
        raise CommandFailed(str(error), ExitCode.FAILED) from error
    except NoBackup as error:
        raise CommandFailed(str(error), ExitCode.UNAVAILABLE) from error


def _confirm(service: ServiceConfig, entry: BackupEntry, utc: bool) -> None:
    question = (
        f"Restore {entry.name} (revision {entry.revision}, {_when(entry.created_at, utc)}) over {service.database}?\n"
        "The service will be stopped and the current files kept as *_corrupted_*. [y/N] "
    )
    if not sys.stdin.isatty():
        raise CommandFailed("refusing to restore without confirmation: pass --yes (or --dry-run)", ExitCode.CONFIG)
    answer = input(question)
    if answer.strip().lower() not in ("y", "yes"):
        raise CommandFailed("not confirmed; nothing was touched", ExitCode.FAILED)


def _restore_failed(error: RestoreError) -> CommandFailed:
    code = ExitCode.UNAVAILABLE if error.reason in UNAVAILABLE_REASONS else ExitCode.FAILED
    return CommandFailed(str(error), code)


def _print_report(report: RestoreReport, as_json: bool, *, steps_printed: bool = False) -> None:
    """The report; its steps only when they were not already printed as they happened."""
    if as_json:
        print_json(report.to_json())
        return
    for line in report.plan:
        print(f"plan: {line}")
    if not steps_printed:
        for step in report.steps:
            print(_step_line(step))
    for path in report.quarantined:
        print(f"kept the previous file as {path}")
    if report.outcome == "restored":
        rows = ", ".join(f"{table} {'?' if count is None else count}" for table, count in report.row_counts.items())
        print(f"restored {report.backup} to {report.database}: revision {report.revision}, rows: {rows or 'none'}")
    print(report.message)
