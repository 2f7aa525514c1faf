"""Which migrations a deploy would apply: the database's revision, the target, and the revisions in between.

Read statically from the scripts (``alembic_scripts``), never by running env.py: the versions dir names the
code's head (the default target); the vault completes the graph, so a database at a revision whose script has
left the code is still placed. The data-loss threshold comes from the policy's ``data-loss`` rule, so a deploy
and the daemon agree on what counts as lost rows.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from rollbackd.config.model import ServiceConfig
from rollbackd.policy.rules import effective_rules
from rollbackd.state.vault import Vault
from rollbackd.target.alembic_scripts import RevisionGraph
from rollbackd.target.database import DatabaseUnavailable, connect_readonly, read_revision

DEFAULT_DATA_LOSS_THRESHOLD = 0.5


class PlanError(Exception):
    """The deploy cannot be planned: unknown target, several heads, a database the scripts do not know."""


@dataclass(frozen=True)
class UpgradePlan:
    from_revision: str | None
    target: str
    pending: tuple[str, ...]  # oldest first: the order `alembic upgrade TARGET` applies them
    scripts: dict[str, str]  # revision -> script file name, for the report

    @property
    def nothing_to_do(self) -> bool:
        return not self.pending


def plan_upgrade(service: ServiceConfig, vault: Vault, current: str | None, to: str | None) -> UpgradePlan:
    """Given the database's revision and an optional target (a revision, a unique prefix, or ``head``), return
    the revisions an upgrade applies. Raise PlanError when the target is unknown or behind the database."""
    code = RevisionGraph.from_directory(service.versions_dir)
    graph = vault.combined_graph(service.versions_dir)
    target = _target(code, graph, to, service.versions_dir)
    currents = current.split("+") if current else []
    unknown = [revision for revision in currents if revision not in graph]
    if unknown:
        raise PlanError(
            f"the database is at {current}, which no script in {service.versions_dir} or the vault knows; "
            "rollbackd cannot tell what an upgrade would apply"
        )
    if target not in currents and any(graph.is_ancestor(target, revision) for revision in currents):
        raise PlanError(
            f"{target} is below the database's revision {current}: migrate only upgrades "
            "(to go back, use `rollbackd restore` or alembic downgrade)"
        )
    pending = tuple(reversed(graph.path_between(currents, [target])))
    scripts = {revision: graph.scripts[revision].path.name for revision in pending}
    return UpgradePlan(current, target, pending, scripts)


def _target(code: RevisionGraph, graph: RevisionGraph, to: str | None, versions_dir: Path) -> str:
    if to is None or to == "head":
        if len(code.heads) != 1:
            heads = ", ".join(code.heads) or "none"
            raise PlanError(f"the scripts in {versions_dir} have {len(code.heads)} heads ({heads}); name one with --to")
        return code.heads[0]
    if to in graph:
        return to
    matches = sorted(revision for revision in graph.scripts if revision.startswith(to))
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise PlanError(f"--to {to} is ambiguous: {', '.join(matches)}")
    raise PlanError(f"--to {to}: no such revision in {versions_dir} or the vault")


def live_revision(database: Path) -> str | None:
    """The service database's revision, read-only. Raise DatabaseUnavailable when it cannot be read."""
    try:
        with contextlib.closing(connect_readonly(database)) as connection:
            return read_revision(connection)
    except DatabaseUnavailable:
        raise
    except Exception as error:  # noqa: BLE001 - sqlite3.DatabaseError and kin: a corrupt or foreign file
        raise DatabaseUnavailable(f"cannot read the revision of {database}: {error}") from error


def data_loss_threshold(service: ServiceConfig) -> float:
    """The fraction of a table's rows whose loss is data loss: the ``data-loss`` rule's threshold."""
    rule = next((rule for rule in effective_rules(service) if rule.name == "data-loss"), None)
    if rule is None or rule.threshold is None:
        return DEFAULT_DATA_LOSS_THRESHOLD
    return rule.threshold
