"""The revision graph, read from migration scripts without importing them."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollbackd.target.alembic_scripts import RevisionGraph, ScriptParseError, ScriptReader, parse_script
from tests.probes.script_files import write_script


def test_reads_identifiers_without_importing_the_script(tmp_path: Path) -> None:
    path = write_script(tmp_path, "b2", "a1", depends_on=("x9",))
    script = parse_script(path)
    assert (script.revision, script.down_revisions, script.depends_on) == ("b2", ("a1",), ("x9",))


def test_merge_revision_has_two_parents(tmp_path: Path) -> None:
    script = parse_script(write_script(tmp_path, "m3", ("b2", "c2")))
    assert script.down_revisions == ("b2", "c2")


def test_file_without_revision_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "helpers.py"
    path.write_text("VALUE = 1\n")
    with pytest.raises(ScriptParseError, match="no revision"):
        parse_script(path)


def test_directory_skips_init_and_unparsable_files(tmp_path: Path) -> None:
    write_script(tmp_path, "a1", None)
    (tmp_path / "__init__.py").write_text("revision = 'zz'\n")
    (tmp_path / "broken.py").write_text("revision = (\n")
    (tmp_path / "notes.txt").write_text("revision = 'yy'\n")
    assert set(ScriptReader().read_directory(tmp_path)) == {"a1"}


def test_missing_directory_has_no_scripts(tmp_path: Path) -> None:
    assert ScriptReader().read_directory(tmp_path / "nope") == {}


def test_reader_rereads_a_changed_file(tmp_path: Path) -> None:
    reader = ScriptReader()
    path = write_script(tmp_path, "a1", None)
    assert reader.read(path) is not None
    path.write_text("revision = 'a1'\ndown_revision = 'z0'\n# now longer than before, so the size differs ....\n")
    script = reader.read(path)
    assert script is not None and script.down_revisions == ("z0",)


@pytest.fixture
def branched(tmp_path: Path) -> RevisionGraph:
    r"""a1 <- b2 <- c3 <- m5 ; a1 <- d4 <- m5 (merge) ; m5 <- e6 (head)"""
    write_script(tmp_path, "a1", None)
    write_script(tmp_path, "b2", "a1")
    write_script(tmp_path, "c3", "b2")
    write_script(tmp_path, "d4", "a1")
    write_script(tmp_path, "m5", ("c3", "d4"))
    write_script(tmp_path, "e6", "m5")
    return RevisionGraph.from_directory(tmp_path)


def test_heads_bases_ancestors_descendants(branched: RevisionGraph) -> None:
    assert branched.heads == ("e6",)
    assert branched.bases == ("a1",)
    assert branched.ancestors("m5") == {"a1", "b2", "c3", "d4"}
    assert branched.descendants("d4") == {"m5", "e6"}
    assert branched.is_ancestor("b2", "e6")
    assert not branched.is_ancestor("e6", "b2")


def test_path_between_lists_what_a_downgrade_undoes_newest_first(branched: RevisionGraph) -> None:
    assert branched.path_between(["b2"], ["e6"]) == ["e6", "m5", "d4", "c3"]
    assert branched.path_between(["e6"], ["e6"]) == []
    assert branched.path_between(["e6"], ["b2"]) == []
    assert branched.path_between([], ["b2"]) == ["b2", "a1"]


def test_combined_graph_prefers_its_own_scripts(tmp_path: Path) -> None:
    write_script(tmp_path / "code", "a1", None)
    write_script(tmp_path / "vault", "a1", None, name="old_copy")
    write_script(tmp_path / "vault", "b2", "a1")
    code = RevisionGraph.from_directory(tmp_path / "code")
    combined = code.combined_with(RevisionGraph.from_directory(tmp_path / "vault"))
    assert combined.heads == ("b2",)
    assert combined.scripts["a1"].path.parent.name == "code"
