"""Keep a blocked migration from running again: move its script out of the versions dir.

The runbook, after data loss: "DO NOT run migration again until bug is fixed. Keep code on previous version."
Once rollbackd has restored the pre-migration backup and blocked the revision, the script is moved into the
state dir (copy, fsync, unlink: nothing is lost), so neither a restart with auto-migration nor a re-run deploy
can apply it; if the same script arrives again it is moved again before `alembic upgrade` reaches it. Where the
versions dir is not writable for rollbackd, the blocked-revision rule still restores the database if it runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from rollbackd.host.private_dirs import make_private_dir
from rollbackd.target.alembic_scripts import ScriptReader

log = logging.getLogger(__name__)


def quarantine_revision(versions_dir: Path, revision: str, folder: Path, service: str) -> list[Path]:
    """Move every script of ``revision`` found in ``versions_dir`` aside; return where they went."""
    moved = []
    for script in ScriptReader().read_directory(versions_dir).values():
        if script.revision == revision:
            target = quarantine_script(script.path, folder, service, revision)
            if target is not None:
                moved.append(target)
    return moved


def quarantine_script(path: Path, folder: Path, service: str, revision: str) -> Path | None:
    """Move a blocked migration script out of the versions dir (copy, fsync, then unlink: nothing is lost).

    Return where it went, or None when the versions dir is not writable here (the daemon then relies on the
    blocked-revision rule restoring the database if the migration runs anyway).
    """
    make_private_dir(folder)
    target = folder / f"{time.strftime('%Y%m%d_%H%M%S', time.gmtime())}_{path.name}"
    try:
        shutil.copy2(path, target)
        with target.open("rb") as handle:
            os.fsync(handle.fileno())
        path.unlink()
    except OSError as error:
        target.unlink(missing_ok=True)
        log.error(
            "%s: blocked migration %s is back in %s and cannot be moved aside (%s); if it runs, the "
            "blocked-revision rule restores the database",
            service,
            revision,
            path.parent,
            error,
            extra={"service": service},
        )
        return None
    log.error(
        "%s: blocked migration %s: moved %s to %s so it cannot run (runbook: DO NOT run the migration again "
        "until the bug is fixed)",
        service,
        revision,
        path,
        target,
        extra={"service": service},
    )
    return target
