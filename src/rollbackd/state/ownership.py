"""Who may write the state dir: a command run as root against a state dir another user owns would create its
files as root (a ``rollbackd.db`` of root:root 0600 that the daemon, running as that user, can then no longer
open), so it is refused before anything is opened."""

from __future__ import annotations

import os
import pwd
from pathlib import Path


class StateDirOwnedByOther(Exception):
    """The state dir belongs to another user than the one running the command (which is root)."""

    def __init__(self, state_dir: Path, owner: str) -> None:
        super().__init__(f"the state dir {state_dir} belongs to user {owner}")
        self.state_dir = state_dir
        self.owner = owner


def owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def refuse_root_in_foreign_state_dir(state_dir: Path, euid: int | None = None) -> None:
    """Raise StateDirOwnedByOther when running as root and ``state_dir`` exists and belongs to another user.

    Any other user cannot create files in a 0700 dir it does not own anyway (that fails with a clear error
    where the file is opened); a state dir that does not exist yet is created by whoever runs first.
    """
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return
    try:
        uid = state_dir.stat().st_uid
    except FileNotFoundError:
        return
    if uid != 0:
        raise StateDirOwnedByOther(state_dir, owner_name(uid))
