"""`rollbackd verify`: run the runbook's verification checklist now, against the live service."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rollbackd.cli.common import Subcommands, add_command, load_cli_config, print_json, seconds, select_services
from rollbackd.exit_codes import ExitCode

if TYPE_CHECKING:
    from rollbackd.config.model import ServiceConfig
    from rollbackd.target.verify import Verification


def register(commands: Subcommands) -> None:
    command = add_command(commands, "verify", "run the runbook's verification checklist now", run)
    command.add_argument("service", nargs="?", help="the service (default: all)")
    command.add_argument("--expect-revision", metavar="REV", help="fail unless `alembic current` is REV")
    command.add_argument(
        "--wait",
        type=seconds,
        default=0.0,
        metavar="DURATION",
        help="wait this long for health first, e.g. 2m, 90s or 120 (default: do not wait)",
    )
    command.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> ExitCode:
    import asyncio

    config = load_cli_config(args)
    services = select_services(config, args.service)
    results = asyncio.run(_verify_all(services, args.expect_revision, args.wait))
    if args.json:
        print_json({name: {"ok": result.ok, "items": result.as_dicts()} for name, result in results.items()})
    else:
        for name, result in results.items():
            print(f"{name}: {'OK' if result.ok else 'FAILED'}")
            for item in result.items:
                mark = "skip" if item.skipped else ("ok" if item.ok else "FAIL")
                print(f"  [{mark:>4}] {item.name}: {item.detail}")
    return ExitCode.OK if all(result.ok for result in results.values()) else ExitCode.FAILED


async def _verify_all(services: list[ServiceConfig], revision: str | None, wait: float) -> dict[str, Verification]:

    from rollbackd.host.http_client import HttpClient
    from rollbackd.target.verify import Expectations, Verifier

    async with HttpClient() as client:
        return {
            service.name: await Verifier(service, client).verify(Expectations(revision=revision), wait_for_health=wait)
            for service in services
        }
