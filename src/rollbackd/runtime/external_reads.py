"""What other processes may change about each service, read for every service in one thread hop a second.

Each service's policy looks, at every evaluation (several a second), at three things the CLI in another process
may change as well as this daemon: the service lock's holder (`rollbackd migrate`, `restore`, `rollback` holding
it), the open deploy window and the blocked revisions (both in the state DB). ``ExternalReads`` answers from what
it read at most ``refresh`` seconds ago, or afresh at once after this daemon changed something (``refresh()``), as
each runtime did on its own before. What it adds: one worker-thread hop reads for every service at once, and reads
only what may have changed. The state DB's queries run again when its change stamp moved (``PRAGMA data_version``
and this process's own writes: ``History.change_stamp``) or when a window they found has closed since; the lock
file is read again when its stat changed or it was held (``ServiceLock.look``). At 50 services that is one hop, one
pragma and 50 ``stat`` calls a second, where each service took a hop, read its lock and ran two queries.

A schema probe run also notes the code version to go back to (``DeployTracker.note_code_version``: git's files);
for a git checkout that rides along in the next shared hop rather than taking a hop of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rollbackd.policy.conditions import DeployWindow
from rollbackd.policy.deploys import DeployTracker
from rollbackd.state.history import STATE_DB_ERRORS, History
from rollbackd.state.service_lock import LockHolder, LockLook, ServiceLock
from rollbackd.target.code_version import uses_images

log = logging.getLogger(__name__)

EXTERNAL_REFRESH = 1.0  # seconds between reads of what other processes may change (lock, windows, blocks)

External = tuple[LockHolder | None, DeployWindow | None, frozenset[str]]
Stamp = tuple[int, int, int]


@dataclass(frozen=True)
class _Records:
    """What the state DB said of one service, and when: valid while the stamp stands and the window is open."""

    stamp: Stamp | None
    read_at: float  # the history's clock
    window: DeployWindow | None
    blocked: frozenset[str]

    def still_valid(self, stamp: Stamp | None, now: float) -> bool:
        if stamp is None or stamp != self.stamp or now < self.read_at:
            return False
        return self.window is None or now < self.window.closes_at


@dataclass(frozen=True)
class _Job:
    """One service's part of a hop: what it had, and whether it must be read in full."""

    watch: ServiceExternal
    forced: bool
    look: LockLook | None
    records: _Records | None
    note_code_version: bool


@dataclass(frozen=True)
class _Read:
    look: LockLook
    records: _Records


class ServiceExternal:
    """One service's view through the shared reader (its ServiceRuntime holds it)."""

    def __init__(self, reads: ExternalReads, name: str, deploys: DeployTracker) -> None:
        self.name = name
        self.deploys = deploys
        self.lock = ServiceLock(reads.state_root, name, "")
        self._reads = reads
        self.current: External | None = None
        self.read_at: float | None = None  # monotonic start of the hop that read ``current``
        self.wanted = 0  # refresh() calls so far
        self.served = 0  # refresh() calls that a completed read began after
        self.look: LockLook | None = None
        self.records: _Records | None = None
        self.note_pending = False

    async def get(self) -> External:
        """The lock holder, the open deploy window and the blocked revisions (at most ``refresh`` seconds old)."""
        return await self._reads.get(self)

    def refresh(self) -> None:
        """This daemon changed the lock, a window or a block: the next get() reads everything afresh."""
        self.wanted += 1

    async def note_code_version(self) -> None:
        """After a schema reading: note the code version to go back to (DeployTracker.note_code_version). Git's
        files are read in the next shared hop, beside the window it needs; a container image takes docker commands
        (up to a minute), so it gets a hop of its own rather than hold up every service's reads."""
        if not uses_images(self.deploys.service):
            self.note_pending = True
            return
        _holder, window, _blocked = await self.get()
        await asyncio.to_thread(self.deploys.note_code_version, window is not None)

    def fresh(self, now: float, refresh: float) -> bool:
        return (
            self.current is not None
            and self.read_at is not None
            and self.served == self.wanted
            and now - self.read_at < refresh
        )


class ExternalReads:
    """The daemon's one reader of the service locks and the state DB's windows and blocks for all its services."""

    def __init__(
        self,
        history: History,
        state_root: Path,
        *,
        refresh: float = EXTERNAL_REFRESH,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.history = history
        self.state_root = state_root
        self.refresh = refresh
        self.monotonic = monotonic
        self.hops = 0  # thread hops taken (for bench/)
        self._watches: dict[str, ServiceExternal] = {}
        self._hop: asyncio.Task[dict[ServiceExternal, _Read | BaseException]] | None = None

    def watch(self, name: str, deploys: DeployTracker) -> ServiceExternal:
        """Read for service ``name`` from now on (in place of a service of that name read before)."""
        watch = ServiceExternal(self, name, deploys)
        self._watches[name] = watch
        return watch

    def forget(self, name: str) -> None:
        """No longer read for ``name`` in every hop (its runtime stopped; a late get() still gets an answer)."""
        self._watches.pop(name, None)

    async def get(self, watch: ServiceExternal) -> External:
        while not watch.fresh(self.monotonic(), self.refresh):
            hop = self._hop
            if hop is None or hop.done():
                hop = self._hop = asyncio.get_running_loop().create_task(self._read_for(watch))
            results = await asyncio.shield(hop)
            outcome = results.get(watch)
            if isinstance(outcome, BaseException):
                raise outcome  # as the runtime's own read raised before; the next get() reads again
        assert watch.current is not None  # noqa: S101 - fresh() says so
        return watch.current

    async def _read_for(self, requester: ServiceExternal) -> dict[ServiceExternal, _Read | BaseException]:
        """One hop for every watched service (and ``requester``, if a stopped runtime still asks)."""
        watches = {*self._watches.values(), requester}
        jobs = [
            _Job(
                watch,
                forced=watch.served != watch.wanted,
                look=watch.look,
                records=watch.records,
                note_code_version=watch.note_pending,
            )
            for watch in watches
        ]
        wanted = {watch: watch.wanted for watch in watches}
        for watch in watches:
            watch.note_pending = False
        started = self.monotonic()
        self.hops += 1
        results = await asyncio.to_thread(self._read_all, jobs)
        for watch, outcome in results.items():
            if isinstance(outcome, BaseException):
                continue
            watch.look, watch.records = outcome.look, outcome.records
            watch.current = (outcome.look.holder, outcome.records.window, outcome.records.blocked)
            watch.read_at = started
            watch.served = wanted[watch]
        return results

    def _read_all(self, jobs: list[_Job]) -> dict[ServiceExternal, _Read | BaseException]:
        """In a worker thread: the stamp first, so a commit racing the queries is seen at the next hop."""
        try:
            stamp: Stamp | None = self.history.change_stamp()
        except STATE_DB_ERRORS:
            stamp = None  # the queries below run, and raise what is wrong to the service that asked
        now = self.history.clock()
        results: dict[ServiceExternal, _Read | BaseException] = {}
        for job in jobs:
            watch = job.watch
            try:
                look = watch.lock.look(None if job.forced else job.look)
            except OSError as error:
                log.warning("%s: cannot read the service lock: %s", watch.name, error)
                look = LockLook(None)
            records = job.records
            if job.forced or records is None or not records.still_valid(stamp, now):
                try:
                    window = watch.deploys.window()
                    blocked = frozenset(self.history.blocked_revisions(watch.name))
                except Exception as error:  # noqa: BLE001 - handed to the service that asked, raised there
                    results[watch] = error
                    continue
                records = _Records(stamp, now, window, blocked)
            if job.note_code_version:
                try:
                    watch.deploys.note_code_version(records.window is not None)
                except Exception:
                    log.exception("%s: noting the code version failed", watch.name)
            results[watch] = _Read(look, records)
        return results
