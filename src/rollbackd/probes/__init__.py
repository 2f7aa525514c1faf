"""The daemon's eyes: one module per signal the runbook asks a person to check by hand.

Each probe returns an Observation. Values of one thing among several are keyed ``<thing>:<quantity>``
(``/api/rooms/ABC123:p95``, ``players:rows``); unprefixed values summarise (the worst path's ``p95``, the largest
``drop_ratio_since_revision_change``).
"""

from __future__ import annotations

import logging

from rollbackd.config.model import ServiceConfig
from rollbackd.probes.base import ALIGNED_PROBES, Probe, ProbeContext, observe
from rollbackd.probes.health import HealthProbe
from rollbackd.probes.integrity import IntegrityProbe
from rollbackd.probes.latency import LatencyProbe
from rollbackd.probes.process import ProcessProbe, has_pid_source
from rollbackd.probes.replication import ReplicationProbe
from rollbackd.probes.rows import RowsProbe
from rollbackd.probes.schema import SchemaProbe
from rollbackd.probes.sqlite_lock import SqliteLockProbe

__all__ = ["ALIGNED_PROBES", "PROBE_NAMES", "Probe", "ProbeContext", "build_probes", "observe"]

log = logging.getLogger(__name__)

PROBE_NAMES = ("health", "latency", "sqlite_lock", "integrity", "schema", "rows", "process")


def build_probes(service: ServiceConfig, context: ProbeContext) -> list[Probe]:
    """Return the enabled probes of ``service``. A probe with nothing to look at (latency without paths, process
    without a pid source) is left out with a log line rather than failing forever."""
    config = service.probes
    probes: list[Probe] = []
    if config.health.enabled:
        probes.append(HealthProbe(service, context))
    if config.latency.enabled:
        if config.latency.paths:
            probes.append(LatencyProbe(service, context))
        else:
            log.info("%s: latency probe has no paths configured; not running it", service.name)
    if config.sqlite_lock.enabled:
        probes.append(SqliteLockProbe(service, context))
    if config.integrity.enabled:
        probes.append(IntegrityProbe(service, context))
    if config.schema_.enabled:
        probes.append(SchemaProbe(service, context))
    if config.rows.enabled:
        probes.append(RowsProbe(service, context))
    if config.process.enabled:
        if has_pid_source(service):
            probes.append(ProcessProbe(service, context))
        else:
            log.info("%s: process probe has no pidfile, match or systemd unit; not running it", service.name)
    if service.replication is not None:
        probes.append(ReplicationProbe(service, context, context.replication))
    return probes
