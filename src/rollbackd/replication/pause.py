"""What a restore asks of replication: stop it before the swap, start it again after.

The protocol and its null case side by side, so whoever restores can be handed either without knowing which
Litestream runs (the daemon's child, an operator's unit, the daemon's child seen from the CLI, or none at all).
"""

from __future__ import annotations

from typing import Protocol


class ReplicationPause(Protocol):
    """Stop replication before the swap, start it after (both blocking). ``pause`` raises
    ReplicationControlError when it could not stop it: then nothing may be swapped."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class NoPause:
    """For a process that runs no Litestream against the database (a CLI with no daemon running)."""

    def pause(self) -> None:
        return None

    def resume(self) -> None:
        return None


class ReplicationControlError(Exception):
    """Replication could not be stopped or started (the operator's unit, or the daemon's child from the CLI)."""
