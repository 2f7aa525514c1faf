"""Owner-only directories (0700) whatever the process umask, and without ever changing it.

``Path.mkdir(mode=0o700, parents=True)`` gives the missing *parents* the default mode (0755 under umask 022) and
the leaf ``0700 & ~umask``; under an umask such as 0177 even the leaf loses its search bit. rollbackd's state tree
(state/, services/, vault/, scratch/ ...) must be 0700 whether the daemon or a CLI command makes it first, so each
directory made here is chmod-ed explicitly, and one that an earlier version left with another mode is repaired.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_DIR_MODE = 0o700


def make_private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents with mode 0700; give ``path`` mode 0700 if it exists with another
    (when this user owns it). Return ``path``. Raise OSError when it cannot be made."""
    missing = []
    current = path
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process, which sets its mode itself
        os.chmod(folder, PRIVATE_DIR_MODE)  # mkdir's mode went through the umask; chmod's does not
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{path} is not a directory")
    if stat.S_IMODE(info.st_mode) != PRIVATE_DIR_MODE and info.st_uid == os.geteuid():
        os.chmod(path, PRIVATE_DIR_MODE)
    return path
