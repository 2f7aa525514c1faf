"""The runbook's `alembic current` against the code's head, without running env.py; and the script vault's feed.

The database's revision is read from ``alembic_version``; the code's heads are parsed statically from the versions
dir (alembic_scripts.py). Every run also copies new scripts into the vault, so that when the code later loses a
script while the database stays at its revision (Scenario 2), the downgrade can still be found and run.

States (``rollbackd_schema_state``): ``in_sync``; ``db_behind`` (the code has revisions the database lacks);
``db_ahead`` (the database is at a revision the code lacks but the vault holds, above the code's head: a downgrade
through the vault brings it back); ``unknown_revision`` (a revision neither knows, or one on a branch the code's
head does not descend from: detail ``relation = diverged``); ``unversioned`` (no alembic_version); ``unknown``
(database or versions dir unavailable; reason ``unavailable``).

Each side is read again only when it may have changed (probes/unchanged.py): the database's revision and schema
fingerprint when its stamp moved, the scripts (the vault's feed, the code's graph, the vault's graph) when an
entry of the versions dir or of the vault was added, removed, replaced or rewritten. ``detail["skipped"]`` says
which sides a run reused.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from rollbackd.config.model import ServiceConfig
from rollbackd.metrics import SCHEMA_STATES, Metrics
from rollbackd.observation import Observation
from rollbackd.probes.base import DEFAULT_TIMEOUT, ProbeContext
from rollbackd.probes.unchanged import (
    SAME_DATABASE,
    DatabaseStamp,
    DirectoryStamp,
    directory_stamp,
)
from rollbackd.state.vault import Vault
from rollbackd.target.alembic_scripts import RevisionGraph, ScriptReader
from rollbackd.target.database import DatabaseUnavailable, connect_readonly, read_revisions, schema_fingerprint

log = logging.getLogger(__name__)

ScriptsStamp = tuple[DirectoryStamp, DirectoryStamp | None]  # the versions dir's and the vault's (None: no vault yet)


@dataclass(frozen=True)
class SchemaComparison:
    state: str
    path: tuple[str, ...] = ()  # revisions between the two ends, newest first
    relation: str = ""


def compare(db_revisions: Sequence[str], code: RevisionGraph, known: RevisionGraph) -> SchemaComparison:
    """Given the database's revision(s), the code's graph and the graph of every script known (code + vault),
    return where the database stands relative to the code's heads."""
    heads = set(code.heads)
    if not db_revisions:
        if not heads:
            return SchemaComparison("in_sync")
        return SchemaComparison("unversioned", tuple(code.path_between((), heads)))
    current = set(db_revisions)
    if current == heads:
        return SchemaComparison("in_sync")
    if all(revision in code for revision in current):
        return SchemaComparison("db_behind", tuple(code.path_between(current, heads)))
    if all(revision in known for revision in current):
        below: set[str] = set(current)
        for revision in current:
            below |= known.ancestors(revision)
        if heads <= below:
            return SchemaComparison("db_ahead", tuple(known.path_between(heads, current)))
        return SchemaComparison("unknown_revision", relation="diverged")
    return SchemaComparison("unknown_revision", relation="unknown")


class SchemaProbe:
    name = "schema"

    def __init__(self, service: ServiceConfig, context: ProbeContext) -> None:
        self.service = service.name
        self.interval = service.probes.schema_.every
        self.timeout = DEFAULT_TIMEOUT
        self.database = service.database
        self.versions_dir = service.versions_dir
        self._reader = ScriptReader()
        self.vault = Vault(context.state_dir.vault(service.name))
        # What the last run read of each side, with the stamps taken before it was read.
        self._watch = context.change_watches.of(self.database)
        self._database_read: tuple[DatabaseStamp, tuple[str, ...], str] | None = None
        self._scripts_read: tuple[ScriptsStamp, RevisionGraph, RevisionGraph] | None = None  # + code's, vault's graph

    async def run(self) -> Observation:
        return await asyncio.to_thread(self.check)

    def check(self) -> Observation:
        detail: dict[str, Any] = {"versions_dir": str(self.versions_dir)}
        reused: list[str] = []
        scripts = self._read_scripts(detail, reused)
        if scripts is None:
            values = {"vault_scripts": float(len(self.vault.graph().scripts))}
            return self._unknown(values, detail, f"versions dir {self.versions_dir} does not exist")
        code, vault_graph = scripts
        values = {"vault_scripts": float(len(vault_graph.scripts))}
        detail["code_heads"] = list(code.heads)
        try:
            db_revisions, detail["schema_fingerprint"] = self._read_database(reused)
        except (DatabaseUnavailable, sqlite3.DatabaseError) as error:
            return self._unknown(values, detail, str(error))
        if reused:
            detail["skipped"] = " and ".join(reused) + " unchanged since the last run"
        comparison = compare(db_revisions, code, code.combined_with(vault_graph))
        detail.update(
            {
                "state": comparison.state,
                "db_revision": "+".join(db_revisions) or None,
                "path": list(comparison.path),
            }
        )
        if comparison.relation:
            detail["relation"] = comparison.relation
        values.update(
            {"in_sync": float(comparison.state == "in_sync"), "revisions_between": float(len(comparison.path))}
        )
        reason = "" if comparison.state == "in_sync" else comparison.state
        return Observation(self.service, self.name, ok=not reason, reason=reason, values=values, detail=detail)

    def _read_scripts(self, detail: dict[str, Any], reused: list[str]) -> tuple[RevisionGraph, RevisionGraph] | None:
        """Feed the vault; return (the code's graph, the vault's graph), or None when there is no versions dir."""
        versions = directory_stamp(self.versions_dir)
        cached = self._scripts_read
        if versions is not None and cached is not None and cached[0] == (versions, directory_stamp(self.vault.root)):
            detail["vault_stored"] = []  # what store_from finds in a versions dir and vault that did not change
            reused.append("scripts (same entries, sizes, mtimes, inodes in the versions dir and the vault)")
            return cached[1], cached[2]
        self._scripts_read = None
        try:
            detail["vault_stored"] = self.vault.store_from(self.versions_dir)
        except OSError as error:
            log.warning("vault: cannot store scripts of %s: %s", self.versions_dir, error)
            detail["vault_error"] = str(error)
        if not self.versions_dir.is_dir():
            return None
        vault_stamp = directory_stamp(self.vault.root)  # after the copies into it, before reading it
        vault_graph = self.vault.graph()
        code = RevisionGraph.from_directory(self.versions_dir, self._reader)
        if versions is not None and "vault_error" not in detail:
            self._scripts_read = ((versions, vault_stamp), code, vault_graph)
        return code, vault_graph

    def _read_database(self, reused: list[str]) -> tuple[tuple[str, ...], str]:
        """The database's revisions and schema fingerprint. Raise DatabaseUnavailable or sqlite3.DatabaseError."""
        stamp = self._watch.stamp()
        cached = self._database_read
        if stamp is not None and cached is not None and cached[0] == stamp:
            reused.append(f"database ({SAME_DATABASE})")
            return cached[1], cached[2]
        self._database_read = None
        read = self._watch.read(_revisions_and_fingerprint) if stamp is not None else None  # a few pages: no new one
        if read is None:
            with closing(connect_readonly(self.database)) as connection:
                read = _revisions_and_fingerprint(connection)
        revisions, fingerprint = read
        if stamp is not None:
            self._database_read = (stamp, revisions, fingerprint)
        return revisions, fingerprint

    def _unknown(self, values: dict[str, float], detail: dict[str, Any], error: str) -> Observation:
        detail.update({"state": "unknown", "error": error})
        return Observation(
            self.service, self.name, ok=False, reason="unavailable", values={**values, "in_sync": 0.0}, detail=detail
        )

    def export(self, metrics: Metrics, observation: Observation) -> None:
        service = self.service
        state = str(observation.detail.get("state", "unknown"))
        metrics.set_state(metrics.schema_state, service, SCHEMA_STATES, state if state in SCHEMA_STATES else "unknown")
        metrics.schema_in_sync.labels(service=service).set(observation.values.get("in_sync", 0.0))
        heads = observation.detail.get("code_heads") or []
        metrics.schema_revision.labels(service=service).info(
            {"db_revision": str(observation.detail.get("db_revision") or ""), "code_head": "+".join(heads)}
        )
        if "vault_scripts" in observation.values:
            metrics.vault_scripts.labels(service=service).set(observation.values["vault_scripts"])


def _revisions_and_fingerprint(connection: sqlite3.Connection) -> tuple[tuple[str, ...], str]:
    return read_revisions(connection), schema_fingerprint(connection)
