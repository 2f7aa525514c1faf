"""The script vault keeps every migration script it has seen, so a downgrade works after the code lost one."""

from __future__ import annotations

import stat
from pathlib import Path

from rollbackd.vault import Vault
from test_alembic_scripts import write_script


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
