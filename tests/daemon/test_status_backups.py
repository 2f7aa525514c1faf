"""`rollbackd status` names a backup that exists: the one the daemon took until someone removes it, then the
newest verified one left in the backup dir (rotation, `backups prune` or a person may remove any)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rollbackd.backup.manifest import manifest_path
from tests.probes.example_app import VbrpgApp, serving
from tests.support.rollbackd_config import daemon_toml, service_toml
from tests.support.rollbackd_daemon import rollbackd_run, wait_for

pytestmark = pytest.mark.e2e


def test_status_never_names_a_deleted_backup_as_the_last_one(
    tmp_path: Path, make_app: Callable[[str], VbrpgApp], metrics_port: int
) -> None:
    app = make_app("vbrpg")
    config = tmp_path / "rollbackd.toml"
    state = tmp_path / "state"
    config.write_text(daemon_toml(state, metrics_port) + service_toml(app, "vbrpg", every="1s"))
    backups = app.database.parent / "backups"
    with serving(app), rollbackd_run(config, state, metrics_port) as daemon:

        def last_backup() -> dict[str, object] | None:
            status = daemon.status() or {}
            entry = status.get("services", {}).get("vbrpg", {})
            return entry.get("last_backup")  # type: ignore[no-any-return]

        startup = wait_for(last_backup, "the start-up backup", log=daemon.log_tail)
        assert startup["reason"] == "startup"
        # A second backup by hand, then the daemon's own one removed by a person.
        manual = daemon.cli("backup", "vbrpg", "--json")
        assert manual.returncode == 0, manual.stdout + manual.stderr
        taken = backups / str(startup["name"])
        taken.unlink()
        manifest_path(taken).unlink()

        shown = last_backup()
        assert shown is not None and shown["name"] != startup["name"], shown
        assert (backups / str(shown["name"])).exists()
        assert shown["reason"] == "manual"
        text = daemon.cli("status").stdout
        assert str(startup["name"]) not in text and f"last backup: {shown['name']}" in text, text

        # None left at all: none is named.
        for path in backups.glob("vbrpg_backup_*"):
            path.unlink()
        assert last_backup() is None
