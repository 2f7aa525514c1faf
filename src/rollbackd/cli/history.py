"""`rollbackd history`: the runbook's Rollback History table, written by rollbackd as it acts."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from rollbackd.cli.common import Subcommands, add_command, load_cli_config, print_json, state_db_unreadable
from rollbackd.exit_codes import ExitCode

if TYPE_CHECKING:
    from rollbackd.state.history import HistoryRow

COLUMNS = ("Date", "Version Rolled Back", "Reason", "Time to Recover", "Notes")


def register(commands: Subcommands) -> None:
    command = add_command(commands, "history", "print the rollback history as the runbook's table", run)
    command.add_argument("service", nargs="?", help="only this service")
    output = command.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON")
    output.add_argument("--markdown", action="store_true", help="print a Markdown table (the runbook's format)")
    command.add_argument("--limit", type=_positive, default=50, help="newest N incidents (default 50)")
    command.add_argument(
        "--all", action="store_true", help="include alert-only and dry-run incidents, not just rollbacks"
    )


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {number}")
    return number


def run(args: argparse.Namespace) -> ExitCode:
    from rollbackd.state.history import STATE_DB_ERRORS, History, describe_state_db_error
    from rollbackd.state.state_dir import StateDir

    config = load_cli_config(args)
    if args.service:
        config.get_service(args.service)
    path = StateDir(config.daemon.state_dir).history_db
    rows: list[HistoryRow] = []
    try:
        if path.exists():
            history = History(path)
            try:
                history.upgrade()
                rows = history.history_rows(args.service, args.limit)
            finally:
                history.close()
    except STATE_DB_ERRORS as error:
        return state_db_unreadable("history", path, describe_state_db_error(error))
    if not args.all:
        rows = [row for row in rows if row.outcome not in ("alerted", "dry_run")]
    if args.json:
        print_json([row.as_dict() for row in rows])
    elif args.markdown:
        print(render_markdown(rows))
    else:
        print(render_text(rows) if rows else "no rollbacks recorded yet")
    return ExitCode.OK


def _cells(row: HistoryRow) -> tuple[str, str, str, str, str]:
    recover = "-" if row.time_to_recover is None else _seconds(row.time_to_recover)
    outcome = "" if row.outcome == "recovered" else f" [{row.outcome}]"
    return (
        time.strftime("%Y-%m-%d %H:%M", time.gmtime(row.date)),
        row.version_rolled_back,
        row.reason + outcome,
        recover,
        row.notes,
    )


def _seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} seconds"
    return f"{seconds / 60:.0f} minutes"


def render_markdown(rows: list[HistoryRow]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in _cells(row)) + " |")
    return "\n".join(lines)


def render_text(rows: list[HistoryRow]) -> str:
    table = [COLUMNS, *(_cells(row) for row in rows)]
    widths = [min(max(len(line[column]) for line in table), 60) for column in range(len(COLUMNS))]
    out = []
    for index, line in enumerate(table):
        out.append("  ".join(cell[:60].ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)
