"""Alembic's revision graph, read statically from migration scripts with ``ast``.

The daemon must never import a migration script or run env.py (they import the application and may do anything),
so it reads only the module-level assignments Alembic itself relies on: ``revision``, ``down_revision`` (a string,
a tuple for merges, or None) and ``depends_on``. Files are re-parsed only when their mtime or size changes.
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# The files Alembic loads from a versions dir: *.py, not __init__.py, not editor lock files (.#name).
SCRIPT_NAME = re.compile(r"\A(?!\.#|__init__)[^/]*\.py\Z")


@dataclass(frozen=True)
class ScriptInfo:
    revision: str
    down_revisions: tuple[str, ...]
    depends_on: tuple[str, ...]
    path: Path


class ScriptParseError(Exception):
    """A file in a versions dir that is not a readable migration script."""


def parse_script(path: Path) -> ScriptInfo:
    """Given a migration script, return its identifiers. Raise ScriptParseError if it has no ``revision``."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError) as error:
        raise ScriptParseError(f"{path}: {error}") from error
    values: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        else:
            continue
        if name in ("revision", "down_revision", "depends_on"):
            try:
                values[name] = ast.literal_eval(value)
            except ValueError as error:
                raise ScriptParseError(f"{path}: {name} is not a literal") from error
    revision = values.get("revision")
    if not isinstance(revision, str) or not revision:
        raise ScriptParseError(f"{path}: no revision identifier")
    return ScriptInfo(
        revision=revision,
        down_revisions=_identifiers(values.get("down_revision"), path, "down_revision"),
        depends_on=_identifiers(values.get("depends_on"), path, "depends_on"),
        path=path,
    )


def _identifiers(value: object, path: Path, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ScriptParseError(f"{path}: {name} must be a string, a tuple of strings or None")


class ScriptReader:
    """Parses the scripts of a directory, re-reading a file only when its (mtime, size) changed."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, int], ScriptInfo | None]] = {}

    def read_directory(self, directory: Path) -> dict[str, ScriptInfo]:
        """Return {revision: script} for the scripts in ``directory`` (empty when it does not exist).

        Unparsable files are skipped with a log line, as Alembic would refuse them too.
        """
        scripts: dict[str, ScriptInfo] = {}
        try:
            entries = sorted(directory.iterdir())
        except FileNotFoundError:
            return scripts
        for path in entries:
            if not SCRIPT_NAME.match(path.name) or not path.is_file():
                continue
            script = self.read(path)
            if script is not None:
                scripts.setdefault(script.revision, script)
        return scripts

    def read(self, path: Path) -> ScriptInfo | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            script: ScriptInfo | None = parse_script(path)
        except ScriptParseError as error:
            log.warning("skipping %s", error)
            script = None
        self._cache[path] = (key, script)
        return script


class RevisionGraph:
    """The revisions of one or more script sets, with the questions a downgrade needs answered."""

    def __init__(self, scripts: Mapping[str, ScriptInfo]) -> None:
        self.scripts = dict(scripts)
        self._children: dict[str, set[str]] = {revision: set() for revision in self.scripts}
        for script in self.scripts.values():
            for parent in script.down_revisions:
                self._children.setdefault(parent, set()).add(script.revision)

    @classmethod
    def from_directory(cls, directory: Path, reader: ScriptReader | None = None) -> RevisionGraph:
        return cls((reader or ScriptReader()).read_directory(directory))

    def combined_with(self, other: RevisionGraph) -> RevisionGraph:
        """Return a graph holding both script sets; on a revision in both, this graph's script wins."""
        return RevisionGraph({**other.scripts, **self.scripts})

    def __contains__(self, revision: object) -> bool:
        return revision in self.scripts

    @property
    def heads(self) -> tuple[str, ...]:
        """Revisions nothing revises (sorted), as ``alembic heads`` would list them."""
        return tuple(sorted(revision for revision in self.scripts if not self._children.get(revision)))

    @property
    def bases(self) -> tuple[str, ...]:
        return tuple(sorted(revision for revision, script in self.scripts.items() if not script.down_revisions))

    def ancestors(self, revision: str) -> set[str]:
        """Every revision ``revision`` builds on (through down_revision and depends_on), not itself."""
        found: set[str] = set()
        pending = list(self._parents(revision))
        while pending:
            current = pending.pop()
            if current in found:
                continue
            found.add(current)
            pending.extend(self._parents(current))
        return found

    def descendants(self, revision: str) -> set[str]:
        found: set[str] = set()
        pending = list(self._children.get(revision, ()))
        while pending:
            current = pending.pop()
            if current in found:
                continue
            found.add(current)
            pending.extend(self._children.get(current, ()))
        return found

    def is_ancestor(self, ancestor: str, revision: str) -> bool:
        return ancestor in self.ancestors(revision)

    def path_between(self, lower: Iterable[str], upper: Iterable[str]) -> list[str]:
        """Return the revisions above ``lower`` up to and including ``upper``, newest first: what a downgrade from
        ``upper`` to ``lower`` undoes (or, read backwards, what an upgrade applies). Empty when ``lower`` is not
        below ``upper``. Revisions unknown to the graph are ignored."""
        lower_set, upper_set = set(lower), set(upper)
        below: set[str] = set(lower_set)
        for revision in lower_set:
            below |= self.ancestors(revision)
        wanted: set[str] = set()
        for revision in upper_set:
            if revision in self.scripts:
                wanted |= {revision} | self.ancestors(revision)
        wanted -= below
        wanted &= set(self.scripts)
        return list(reversed(self._topological(wanted)))

    def parents(self, revision: str) -> tuple[str, ...]:
        """The revisions ``revision`` revises (its down_revision, not depends_on): where ``downgrade -1`` goes."""
        script = self.scripts.get(revision)
        return script.down_revisions if script else ()

    def _parents(self, revision: str) -> tuple[str, ...]:
        script = self.scripts.get(revision)
        return (*script.down_revisions, *script.depends_on) if script else ()

    def _topological(self, revisions: set[str]) -> list[str]:
        """Oldest first (each revision after all of its parents), ties broken by name for a stable order."""
        ordered: list[str] = []
        placed: set[str] = set()
        remaining = set(revisions)
        while remaining:
            ready = sorted(
                rev for rev in remaining if all(p in placed or p not in remaining for p in self._parents(rev))
            )
            if not ready:  # a cycle: Alembic refuses these; list the rest rather than loop
                ready = sorted(remaining)
            for revision in ready:
                ordered.append(revision)
                placed.add(revision)
                remaining.discard(revision)
        return ordered
