"""The daemon's executor for one service, built as ServiceRuntime builds it, for tests that run a rung directly."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from rollbackd.actions.executor import Executor
from rollbackd.config.model import ServiceConfig
from rollbackd.metrics import Metrics
from rollbackd.policy.deploys import DeployTracker
from rollbackd.replication.pause import ReplicationPause
from rollbackd.state.history import History
from rollbackd.state.state_dir import StateDir
from rollbackd.state.vault import Vault
from rollbackd.target.control import ServiceControl


def executor_for(
    service: ServiceConfig, state_dir: StateDir, history: History, *, replication: ReplicationPause | None = None
) -> Executor:
    return Executor(
        service,
        state_dir=state_dir,
        control=ServiceControl(service),
        vault=Vault(state_dir.vault(service.name)),
        deploys=DeployTracker(service, history, time.time),
        metrics=Metrics(CollectorRegistry()),
        replication=replication,
    )
