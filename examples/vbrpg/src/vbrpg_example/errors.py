"""Typed errors and the exit codes they map to, so library code raises and only `cli.main` exits."""

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of `vbrpg-example`; scripts and rollbackd tell failures apart by them."""

    OK = 0
    ERROR = 1
    USAGE = 2
    MIGRATION_FAILED = 3
    SERVICE_FAILED = 4
    NOT_RUNNING = 5


class VbrpgError(Exception):
    """An expected failure with a message meant for the operator, not a traceback."""

    exit_code: ExitCode = ExitCode.ERROR


class UsageError(VbrpgError):
    """The command line asks for something that cannot be done as given."""

    exit_code = ExitCode.USAGE


class MigrationFailed(VbrpgError):
    """Alembic exited non-zero; the message carries the tail of its output."""

    exit_code = ExitCode.MIGRATION_FAILED


class ServiceFailed(VbrpgError):
    """The service did not come up, or did not go down, as asked."""

    exit_code = ExitCode.SERVICE_FAILED


class NotRunning(VbrpgError):
    """There is no service process to act on."""

    exit_code = ExitCode.NOT_RUNNING
