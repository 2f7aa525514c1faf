"""`rollbackd rollback`: the runbook's rollbacks by hand, with the daemon's safety and a history record."""

from __future__ import annotations

import argparse
import sys

from rollbackd.cli.common import Subcommands, add_command, load_cli_config, print_json, select_services
from rollbackd.cli.progress import PhaseProgress
from rollbackd.exit_codes import ExitCode


def register(commands: Subcommands) -> None:
    command = add_command(
        commands,
        "rollback",
        "downgrade and/or restore by hand, with the daemon's safety (backup first, verification after, history)",
        run,
    )
    command.add_argument("service", nargs="?", help="the service (may be left out when the config has one)")
    target = command.add_mutually_exclusive_group()
    target.add_argument("--steps", type=int, metavar="N", help="alembic downgrade N revisions (default 1)")
    target.add_argument("--to", metavar="REV", help="downgrade to REV, or with --restore: restore a backup of REV")
    command.add_argument("--restore", action="store_true", help="restore a verified backup instead of downgrading")
    command.add_argument("--backup", metavar="NAME", help="with --restore: this backup (default: the newest verified)")
    command.add_argument(
        "--code",
        action="store_true",
        help="with --restore: also put back the code recorded before the last deploy (git commit or compose image)",
    )
    command.add_argument("--dry-run", action="store_true", help="print what would be done and touch nothing")
    command.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> ExitCode:
    import asyncio

    from rollbackd.actions.manual import ManualRequest, manual_rollback

    config = load_cli_config(args)
    if args.backup and not args.restore:
        print("rollbackd rollback: --backup needs --restore", file=sys.stderr)
        return ExitCode.CONFIG
    if args.code and not args.restore:
        # A downgrade leaves the code where it is; the runbook's full rollback restores the database with the code.
        print("rollbackd rollback: --code needs --restore (code and database go back together)", file=sys.stderr)
        return ExitCode.CONFIG
    if args.steps is not None and args.steps < 1:
        print("rollbackd rollback: --steps must be 1 or more", file=sys.stderr)
        return ExitCode.CONFIG
    services = select_services(config, args.service)
    if len(services) != 1:
        names = ", ".join(service.name for service in services)
        print(f"rollbackd rollback: name the service to roll back ({names})", file=sys.stderr)
        return ExitCode.CONFIG
    request = ManualRequest(args.steps, args.to, args.restore, args.backup, args.code)
    progress = None if args.json or args.dry_run else PhaseProgress()
    try:
        result = asyncio.run(
            manual_rollback(
                config,
                services[0],
                request,
                dry_run=args.dry_run,
                on_phase=None if progress is None else progress.phase,
            )
        )
    finally:
        if progress is not None:
            progress.close()
    if result.refused is not None:  # checked before anything was recorded, backed up or stopped
        if args.json:
            print_json(result.as_dict())
        print(f"rollbackd rollback: {result.refused}; nothing was touched", file=sys.stderr)
        return ExitCode.CONFIG
    if args.json:
        print_json(result.as_dict())
        return ExitCode.OK if args.dry_run or result.ok else ExitCode.FAILED
    heading = "would" if args.dry_run else "plan"
    print(f"{services[0].name}: {heading}:")
    for step in result.plan:
        print(f"  - {step}")
    if args.dry_run:
        return ExitCode.OK
    if result.outcome is not None:
        print(f"{'done' if result.outcome.ok else 'FAILED'}: {result.outcome.summary}")
    if result.verification is not None:
        for item in result.verification.items:
            mark = "skip" if item.skipped else ("ok" if item.ok else "FAIL")
            print(f"  [{mark:>4}] {item.name}: {item.detail}")
    print(f"incident {result.incident_id}: {'recovered' if result.ok else 'failed'} (rollbackd history)")
    return ExitCode.OK if result.ok else ExitCode.FAILED
