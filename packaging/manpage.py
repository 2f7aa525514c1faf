"""Write rollbackd(1) in roff from the CLI's own argparse parser, so the man page says what --help says.

    python packaging/manpage.py > rollbackd.1      (build-deb.sh runs it with the packaged venv's Python)

No dependency beyond rollbackd: argparse's parser holds every command, option and help text already.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from rollbackd import __version__
from rollbackd.cli import build_parser


def roff(text: str) -> str:
    """Escape text for roff: backslashes, and a leading dot or quote that would read as a request."""
    lines = []
    for line in text.replace("\\", "\\e").replace("-", "\\-").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def option_lines(parser: argparse.ArgumentParser) -> list[str]:
    lines = []
    for action in parser._actions:  # argparse has no public accessor for its actions
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            metavar = "" if action.nargs == 0 else " " + (action.metavar or action.dest.upper())
            name = ", ".join(f"\\fB{roff(option)}\\fR{roff(str(metavar))}" for option in action.option_strings)
        else:
            name = f"\\fI{roff(str(action.metavar or action.dest))}\\fR"
        lines += [".TP", name, roff(action.help or "")]
    return lines


def manpage(parser: argparse.ArgumentParser) -> str:
    # SOURCE_DATE_EPOCH: the same page from the same tree (reproducible builds)
    date = time.strftime("%Y-%m-%d", time.gmtime(int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))))
    lines = [
        f'.TH ROLLBACKD 1 "{date}" "rollbackd {__version__}" "User Commands"',
        ".SH NAME",
        "rollbackd \\- watchdog that runs the SQLite + Alembic rollback runbook by itself",
        ".SH SYNOPSIS",
        "\\fBrollbackd\\fR [\\fB\\-\\-config\\fR \\fIPATH\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        roff(" ".join((parser.description or "").split())),
        ".SH OPTIONS",
        *option_lines(parser),
        ".SH COMMANDS",
    ]
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in subcommands.choices.items():
        usage = " ".join(command.format_usage().split()).removeprefix("usage: ")
        lines += [".SS " + roff(name), roff(command.description or ""), ".PP", "\\fB" + roff(usage) + "\\fR"]
        lines += option_lines(command)
    lines += [".SH ENVIRONMENT AND EXIT STATUS", roff(" ".join((parser.epilog or "").split()))]
    lines += [".SH SEE ALSO", "/usr/share/doc/rollbackd/README.md, \\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(manpage(build_parser()))
