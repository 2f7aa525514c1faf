"""The script vault keeps every migration script it has seen, so a downgrade works after the code lost one."""

from __future__ import annotations

import configparser
import os
import stat
import subprocess
import sys
from pathlib import Path

from rollbackd.state.vault import Vault
from rollbackd.target.alembic_scripts import RevisionGraph
from rollbackd.target.database import connect_readonly, read_revision
from tests.probes.example_app import VbrpgApp
from tests.probes.script_files import write_script


def test_stores_each_script_once_owner_only(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    write_script(versions, "a1", None)
    write_script(versions, "b2", "a1")
    vault = Vault(tmp_path / "vault" / "vbrpg")
    assert vault.store_from(versions) == ["a1", "b2"]
    assert vault.store_from(versions) == []
    assert sorted(path.name for path in vault.scripts().values()) == ["a1_step.py", "b2_step.py"]
    for path in vault.scripts().values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keeps_a_script_after_the_code_loses_it(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    write_script(versions, "a1", None)
    newer = write_script(versions, "b2", "a1")
    vault = Vault(tmp_path / "vault")
    vault.store_from(versions)
    newer.unlink()
    assert vault.store_from(versions) == []
    assert set(vault.scripts()) == {"a1", "b2"}
    assert vault.combined_graph(versions).heads == ("b2",)


def test_an_edited_script_replaces_its_copy(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    script = write_script(versions, "a1", None)
    vault = Vault(tmp_path / "vault")
    vault.store_from(versions)
    script.write_text(script.read_text() + "\n# fixed the downgrade\n")
    assert vault.store_from(versions) == ["a1"]
    assert "fixed the downgrade" in vault.scripts()["a1"].read_text()


def test_a_renamed_script_is_kept_under_its_new_name_only(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    script = write_script(versions, "a1", None)
    vault = Vault(tmp_path / "vault")
    vault.store_from(versions)
    script.rename(versions / "a1_better_name.py")
    assert vault.store_from(versions) == ["a1"]
    assert [path.name for path in (tmp_path / "vault").iterdir()] == ["a1_better_name.py"]


def test_materializes_only_the_scripts_the_code_lacks(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    write_script(versions, "a1", None)
    lost = write_script(versions, "b2", "a1")
    vault = Vault(tmp_path / "vault")
    vault.store_from(versions)
    lost.unlink()
    copies = vault.materialize_missing(versions, tmp_path / "extra")
    assert [copy.name for copy in copies] == ["b2_step.py"]
    assert copies[0].read_text() == vault.scripts()["b2"].read_text()


def test_downgrade_through_the_vault_after_the_code_lost_the_script(tmp_path: Path) -> None:
    """Scenario 2 end to end: the database is at a revision whose script left with a code rollback; plain alembic
    cannot downgrade ("Can't locate revision"); with the vault's copy on version_locations it can."""
    vbrpg_app = VbrpgApp(tmp_path / "vbrpg").create()
    code_head = "e6093b7a4c18"
    vault = Vault(tmp_path / "vault")
    vault.store_from(vbrpg_app.versions_dir)
    stash = tmp_path / "deployed"
    vbrpg_app.fault("schema-skew", "--stash", str(stash))
    vault.store_from(stash)  # the schema probe copied the script while it was deployed; the stash is that moment
    assert read_db_revision(vbrpg_app.database) == "5a7d3e9b1f24"
    assert RevisionGraph.from_directory(vbrpg_app.versions_dir).heads == (code_head,)

    plain = alembic(vbrpg_app.app_dir / "alembic.ini", "downgrade", code_head, cwd=vbrpg_app.app_dir)
    assert plain.returncode != 0
    assert "Can't locate revision" in plain.stdout + plain.stderr

    extra = vault.materialize_missing(vbrpg_app.versions_dir, tmp_path / "vault-scripts")
    assert [path.name for path in extra] == ["5a7d3e9b1f24_add_player_display_name.py"]
    ini = ini_with_version_locations(vbrpg_app, [vbrpg_app.versions_dir, tmp_path / "vault-scripts"], tmp_path)
    through_vault = alembic(ini, "downgrade", code_head, cwd=vbrpg_app.app_dir)
    assert through_vault.returncode == 0, through_vault.stdout + through_vault.stderr
    assert read_db_revision(vbrpg_app.database) == code_head


def read_db_revision(database: Path) -> str | None:
    connection = connect_readonly(database)
    try:
        return read_revision(connection)
    finally:
        connection.close()


def alembic(ini: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    program = str(Path(sys.executable).parent / "alembic")
    return subprocess.run(
        [program, "-c", str(ini), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def ini_with_version_locations(app: VbrpgApp, locations: list[Path], tmp_path: Path) -> Path:
    """The app's alembic.ini with absolute script_location and version_locations = ``locations``."""
    parser = configparser.RawConfigParser()
    parser.read(app.app_dir / "alembic.ini")
    parser.set("alembic", "script_location", str(app.app_dir / "alembic"))
    parser.set("alembic", "path_separator", "os")
    parser.set("alembic", "version_locations", os.pathsep.join(str(location) for location in locations))
    ini = tmp_path / "downgrade.ini"
    with ini.open("w") as handle:
        parser.write(handle)
    return ini
