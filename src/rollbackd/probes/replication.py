"""Is the database's replica keeping up: reachable, how far behind the last commit, how old its newest snapshot,
and whether the Litestream child runs (for ``managed = true``).

The replica is read with ``litestream ltx`` in a worker thread (bounded by a timeout: an S3 endpoint that is down
makes it retry for over a minute), so a slow or dead replica never holds up the other probes. The database's last
commit is the modification time of its ``-wal`` (or of the file itself without one): a stat, never an open of the
file. Litestream prints LTX times to the second, so the lag is whole seconds; an idle database has lag 0.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path
from typing import Any

from rollbackd.config.model import ServiceConfig
from rollbackd.metrics import Metrics
from rollbackd.observation import Observation
from rollbackd.probes.base import ProbeContext
from rollbackd.replication.litestream import (
    LTX_TIMEOUT,
    CredentialsError,
    Litestream,
    LitestreamMissing,
    ReplicaState,
    ReplicaUnreachable,
    child_environment,
    config_path,
    find_litestream,
    read_replica,
)
from rollbackd.replication.supervisor import ChildState, Replication
from rollbackd.state.state_dir import StateDir

MIN_INTERVAL = 5.0
MAX_INTERVAL = 60.0
# Listing every compaction level is ten LIST requests to S3; a run lists level 0 (the newest transactions) only,
# and all levels (the newest snapshot too) this often, or when level 0 is empty after an idle spell.
FULL_LISTING_EVERY = 600.0


def last_commit_at(database: Path) -> float | None:
    """When the database was last written: its -wal's mtime, else the file's; None when neither exists."""
    for path in (database.with_name(database.name + "-wal"), database):
        try:
            return os.stat(path).st_mtime
        except OSError:
            continue
    return None


def replication_lag(last_commit: float | None, replicated: float | None) -> float | None:
    """Whole seconds the replica is behind the last commit (0 when it holds it); None when either is unknown."""
    if last_commit is None or replicated is None:
        return None
    return max(0.0, math.floor(last_commit) - replicated)


class ReplicationProbe:
    name = "replication"

    def __init__(self, service: ServiceConfig, context: ProbeContext, replication: Replication | None) -> None:
        if service.replication is None:
            raise ValueError(f"{service.name}: replication is not configured")
        self.config = service
        self.service = service.name
        self.max_lag = service.replication.max_lag
        self.interval = min(MAX_INTERVAL, max(MIN_INTERVAL, self.max_lag / 3))
        self.timeout = LTX_TIMEOUT
        self.replication = replication
        self._state_dir: StateDir = context.state_dir
        self._clock = context.clock
        self._full_listing_at: float | None = None  # monotonic
        self._snapshot: float | None = None

    async def run(self) -> Observation:
        child = self._child()
        detail: dict[str, Any] = dict(child)
        try:
            replica = await asyncio.to_thread(self._read)
        except (LitestreamMissing, CredentialsError, ReplicaUnreachable) as error:
            detail["error"] = str(error)
            return Observation(self.service, self.name, ok=False, reason="unreachable", detail=detail)
        except FileNotFoundError as error:
            detail["error"] = f"no Litestream config yet ({error.filename}): replication has not started"
            return Observation(
                self.service, self.name, ok=False, reason=self._child_reason() or "not_started", detail=detail
            )
        now = self._clock()
        committed = last_commit_at(self.config.database)
        lag = replication_lag(committed, replica.newest_transaction)
        values: dict[str, float] = {}
        if replica.newest_transaction is not None:
            values["replicated_at"] = replica.newest_transaction
        if replica.newest_snapshot is not None:
            values["snapshot_at"] = replica.newest_snapshot
            values["snapshot_age_seconds"] = max(0.0, now - replica.newest_snapshot)
        if committed is not None:
            values["last_commit_at"] = committed
        if lag is not None:
            values["lag_seconds"] = lag
        reason = self._child_reason()
        if reason is None and replica.newest_transaction is None:
            reason = "empty"
        if reason is None and lag is not None and lag > self.max_lag:
            reason = "lagging"
        return Observation(
            self.service, self.name, ok=reason is None, reason=reason or "", values=values, detail=detail
        )

    def _read(self) -> ReplicaState:
        replication = self.config.replication
        assert replication is not None  # noqa: S101 - checked in __init__
        config = config_path(self.config, self._state_dir)
        if not config.is_file():
            raise FileNotFoundError(2, "no such file", str(config))
        litestream = Litestream(
            find_litestream(replication.binary),
            config,
            self.config.database,
            child_environment(self.config),
            expand_env=not replication.managed,
        )
        now = time.monotonic()
        if self._full_listing_at is None or now - self._full_listing_at >= FULL_LISTING_EVERY:
            return self._read_all(litestream, now)
        newest = read_replica(litestream, timeout=self.timeout, level="0")
        if newest.newest_transaction is None:
            return self._read_all(litestream, now)
        return ReplicaState(newest.newest_transaction, self._snapshot, newest.files)

    def _read_all(self, litestream: Litestream, now: float) -> ReplicaState:
        state = read_replica(litestream, timeout=self.timeout)
        self._full_listing_at, self._snapshot = now, state.newest_snapshot
        return state

    def _child(self) -> dict[str, Any]:
        if self.replication is None:
            return {}
        described = self.replication.describe()
        return {key: described[key] for key in ("state", "last_error") if described.get(key) is not None}

    def _child_reason(self) -> str | None:
        """Why the child is not replicating right now (a managed child only), or None when it is."""
        if self.replication is None or self.replication.state is ChildState.RUNNING:
            return None
        reasons = {ChildState.PAUSED: "paused", ChildState.REFUSED: "refused", ChildState.STARTING: "starting"}
        return reasons.get(self.replication.state, "child_down")

    def export(self, metrics: Metrics, observation: Observation) -> None:
        labels = {"service": self.service}
        metrics.replication_up.labels(**labels).set(1 if observation.reason in ("", "lagging", "empty") else 0)
        metrics.replication_max_lag_seconds.labels(**labels).set(self.max_lag)
        values = observation.values
        if "lag_seconds" in values:
            metrics.replication_lag_seconds.labels(**labels).set(values["lag_seconds"])
        if "replicated_at" in values:
            metrics.replication_last_replicated_timestamp_seconds.labels(**labels).set(values["replicated_at"])
        if "snapshot_at" in values:
            metrics.replication_last_snapshot_timestamp_seconds.labels(**labels).set(values["snapshot_at"])
