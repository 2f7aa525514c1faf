"""What the code knows about the schema: the revisions in an app dir's versions/, read with Alembic's own
ScriptDirectory.

The scripts are re-read whenever versions/ changes (a file added, removed or rewritten), because a deploy
or a code rollback changes them under a running service; an unchanged directory costs one listing.
"""

import os
import threading
from collections.abc import Iterator

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from vbrpg_example.app_dir import AppDir

_Fingerprint = tuple[tuple[str, int, int], ...]


class MigrationScripts:
    """An app dir's revision graph: its heads, and whether it knows a revision."""

    def __init__(self, app_dir: AppDir) -> None:
        self.app_dir = app_dir
        self._lock = threading.Lock()
        self._fingerprint: _Fingerprint | None = None
        self._scripts: ScriptDirectory | None = None

    def script_directory(self) -> ScriptDirectory:
        """Return Alembic's view of versions/, rebuilt if the directory changed since the last call."""
        fingerprint = self._fingerprint_now()
        with self._lock:
            if self._scripts is None or fingerprint != self._fingerprint:
                config = Config(str(self.app_dir.ini_path))
                self._scripts = ScriptDirectory.from_config(config)
                self._fingerprint = fingerprint
            return self._scripts

    def heads(self) -> tuple[str, ...]:
        return tuple(self.script_directory().get_heads())

    def head(self) -> str | None:
        """Return the single head, or None if versions/ is empty. Raise ValueError on several heads."""
        heads = self.heads()
        if len(heads) > 1:
            raise ValueError(f"{self.app_dir.versions_path} has several heads: {', '.join(heads)}")
        return heads[0] if heads else None

    def knows(self, revision: str) -> bool:
        """Return whether `revision` (a full id) is one of the app dir's scripts."""
        try:
            script = self.script_directory().get_revision(revision)
        except CommandError:
            return False
        return script is not None and script.revision == revision

    def ancestors(self, revision: str) -> Iterator[str]:
        """Yield `revision` and every revision below it, newest first. Raise CommandError if unknown."""
        for script in self.script_directory().iterate_revisions(revision, "base"):
            yield script.revision

    def _fingerprint_now(self) -> _Fingerprint:
        with os.scandir(self.app_dir.versions_path) as entries:
            return tuple(
                sorted(
                    (entry.name, entry.stat().st_mtime_ns, entry.stat().st_size)
                    for entry in entries
                    if entry.name.endswith(".py")
                )
            )
