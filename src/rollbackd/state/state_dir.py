"""Where rollbackd keeps its own files under ``daemon.state_dir``, named in one place.

state_dir/
  rollbackd.db                       history of incidents and actions (SQLite, own Alembic migrations)
  rollbackd.sock                     the running daemon's status socket (0600)
  locks/<service>.lock               one action at a time per service (daemon and CLI)
  vault/<service>/<script>.py        every migration script ever seen, for downgrades after a code rollback
  services/<service>/                per-service state: baselines, the restore journal, deploy window
  scratch/                           drills and rehearsals (emptied before use)
"""

from __future__ import annotations

from pathlib import Path

from rollbackd.host.private_dirs import make_private_dir


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> None:
        """Create the tree with owner-only permissions (0700 whatever the umask; an earlier version's other modes
        are repaired). Raise OSError when it cannot be created."""
        for folder in (self.root, self.root / "locks", self.root / "vault", self.root / "services", self.scratch):
            make_private_dir(folder)

    @property
    def history_db(self) -> Path:
        return self.root / "rollbackd.db"

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    def vault(self, service: str) -> Path:
        return self.root / "vault" / service

    def service_dir(self, service: str) -> Path:
        return make_private_dir(self.root / "services" / service)
