"""`rollbackd history`: the runbook's Rollback History table, written by rollbackd as it acts."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rollbackd.cli.common import Subcommands, add_command, load_cli_config, print_json, state_db_unreadable
from rollbackd.cli.times import table_time
from rollbackd.exit_codes import ExitCode

if TYPE_CHECKING:
    from rollbackd.state.history import HistoryRow

COLUMNS = ("Date", "Version Rolled Back", "Reason", "Time to Recover", "Notes")
CELL_WIDTH = 60  # a cell longer than this is cut with an ellipsis in the text table, unless --full
ELLIPSIS = "…"


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
    command.add_argument(
        "-l",
        "--full",
        action="store_true",
        help=f"print every cell whole (the table cuts cells longer than {CELL_WIDTH} characters with {ELLIPSIS})",
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
        print(render_markdown(rows, utc=args.utc))
    else:
        print(render_text(rows, utc=args.utc, full=args.full) if rows else "no rollbacks recorded yet")
    return ExitCode.OK


def _cells(row: HistoryRow, utc: bool) -> tuple[str, str, str, str, str]:
    recover = "-" if row.time_to_recover is None else _seconds(row.time_to_recover)
    outcome = "" if row.outcome == "recovered" else f" [{row.outcome}]"
    return (
        table_time(row.date, utc=utc),
        row.version_rolled_back,
        row.reason + outcome,
        recover,
        row.notes,
    )


def _seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} seconds"
    return f"{seconds / 60:.0f} minutes"


def render_markdown(rows: list[HistoryRow], *, utc: bool = False) -> str:
    """The runbook's table, every cell whole (Markdown wraps by itself)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in _cells(row, utc)) + " |")
    return "\n".join(lines)


def render_text(rows: list[HistoryRow], *, utc: bool = False, full: bool = False) -> str:
    """Aligned columns for a terminal. A cell longer than CELL_WIDTH ends in an ellipsis, and a last line says
    how to see it whole (as systemctl's -l); with ``full`` nothing is cut."""
    table = [COLUMNS, *(_cells(row, utc) for row in rows)]
    limit = None if full else CELL_WIDTH
    widths = [max(len(line[column]) for line in table) for column in range(len(COLUMNS))]
    if limit is not None:
        widths = [min(width, limit) for width in widths]
    out = []
    cut = False
    for index, line in enumerate(table):
        cells = []
        for cell, width in zip(line, widths, strict=True):
            if len(cell) > width:
                cell, cut = cell[: width - 1] + ELLIPSIS, True
            cells.append(cell.ljust(width))
        out.append("  ".join(cells).rstrip())
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    if cut:
        out.append(
            f"(cells cut at {CELL_WIDTH} characters end in {ELLIPSIS}: `rollbackd history --full` prints them whole)"
        )
    return "\n".join(out)
