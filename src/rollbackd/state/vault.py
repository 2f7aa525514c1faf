"""The script vault: a copy of every migration script ever seen, so a downgrade works after the code lost it.

When the code is rolled back (or a script is removed) while the database stays at the newer revision, Alembic
fails with "Can't locate revision": the downgrade() it needs left with the script. The schema probe copies each
script it sees into ``state_dir/vault/<service>/`` under its original file name (one file per revision, 0600);
a downgrade then runs Alembic with ``version_locations`` = the versions dir + the scripts materialized from here.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from rollbackd.host.atomic_files import write_bytes_atomic
from rollbackd.host.private_dirs import make_private_dir
from rollbackd.target.alembic_scripts import RevisionGraph, ScriptReader

log = logging.getLogger(__name__)


class Vault:
    def __init__(self, root: Path, reader: ScriptReader | None = None) -> None:
        self.root = root
        self._reader = reader or ScriptReader()
        self._seen: dict[Path, tuple[int, int]] = {}  # source files already in the vault, by (mtime, size)

    def store_from(self, versions_dir: Path) -> list[str]:
        """Copy the scripts of ``versions_dir`` the vault lacks (or holds in another version) into it.

        Return the revisions stored, sorted. Raise OSError when the vault cannot be written (nothing is lost:
        every copy is atomic, and an older copy is replaced only by a complete new one).
        """
        stored: list[str] = []
        held = self._reader.read_directory(self.root)
        for revision, script in self._reader.read_directory(versions_dir).items():
            stat = script.path.stat()
            signature = (stat.st_mtime_ns, stat.st_size)
            kept = held.get(revision)
            if kept is not None and self._seen.get(script.path) == signature:
                continue
            content = script.path.read_bytes()
            if kept is not None and kept.path.name == script.path.name and _same_content(kept.path, content):
                self._seen[script.path] = signature
                continue
            make_private_dir(self.root)
            target = self.root / script.path.name
            write_bytes_atomic(target, content, mode=0o600)
            if kept is not None and kept.path != target:
                kept.path.unlink(missing_ok=True)  # the same revision under its old file name: superseded
            self._seen[script.path] = signature
            log.info("vault: stored revision %s (%s)", revision, script.path.name)
            stored.append(revision)
        return sorted(stored)

    def scripts(self) -> dict[str, Path]:
        """Return {revision: vault file}."""
        return {revision: script.path for revision, script in self._reader.read_directory(self.root).items()}

    def graph(self) -> RevisionGraph:
        """The graph of the vault's scripts alone."""
        return RevisionGraph(self._reader.read_directory(self.root))

    def combined_graph(self, versions_dir: Path) -> RevisionGraph:
        """The versions dir's graph completed with the vault's scripts (the versions dir wins on a conflict)."""
        return RevisionGraph(self._reader.read_directory(versions_dir)).combined_with(self.graph())

    def materialize_missing(self, versions_dir: Path, target_dir: Path) -> list[Path]:
        """Copy the vault's scripts whose revision ``versions_dir`` lacks into ``target_dir``; return the copies.

        Point Alembic's ``version_locations`` at ``versions_dir`` and ``target_dir`` to downgrade through them.
        """
        present = self._reader.read_directory(versions_dir)
        make_private_dir(target_dir)
        copies = []
        for revision, path in sorted(self.scripts().items()):
            if revision in present:
                continue
            copy = target_dir / path.name
            shutil.copyfile(path, copy)
            copy.chmod(0o600)
            copies.append(copy)
        return copies


def _same_content(path: Path, content: bytes) -> bool:
    try:
        return path.read_bytes() == content
    except OSError:
        return False
