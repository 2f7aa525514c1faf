"""Named exit codes, so scripts that call rollbackd (deploy hooks, CI) can tell outcomes apart."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the operation ran and did not succeed (unhealthy, verification failed, restore refused)
    CONFIG = 2  # bad config or bad command-line usage: nothing was touched
    UNAVAILABLE = 4  # something it needs is not there: database, service, daemon, backup dir
    INTERRUPTED = 130
