"""The lock probes of every service that run in the same turn of the event loop, inspected in one thread hop.

A lock probe's blocking work is a few ``stat`` calls and a (shared) read of /proc/locks: tens of microseconds,
less than the worker-thread hop it took on its own (the submit, the wake-up of a thread, the loop woken back).
At default intervals 50 services made 50 such hops a second. The daemon runs the lock probes of all services
on one grid of their interval (``ALIGNED_PROBES`` in probes/base.py), so they come due in the same turn of the
loop; ``LockRounds.run`` gathers the jobs asked for in that turn and runs them one after another in one hop.
Each job's result or exception goes to its own caller, as its own hop would have returned or raised it. A job
that would take long (a subprocess) is not given to a round: the probe runs it in a hop of its own (see
``SqliteLockProbe.inspect``'s ``quick``), so one slow service never holds up the others' answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class LockRounds:
    """One worker-thread hop for the jobs asked for in one turn of the event loop (the daemon shares one)."""

    def __init__(self) -> None:
        self.hops = 0  # rounds run (for tests and bench/)
        self._pending: list[_Job] | None = None  # the jobs of the round about to start
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that round will start on

    async def run(self, job: Callable[[], T]) -> T:
        """Return what ``job()`` returns (or raise what it raises), called in a worker thread of the loop's
        default executor together with the other jobs asked for in this turn of the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._pending is None or self._loop is not loop:  # (a round left on a loop that stopped is dropped)
            self._pending, self._loop = [], loop
            loop.call_soon(self._start, loop)  # after every task woken in this turn has asked
        self._pending.append((job, future))
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            return  # a round for a loop that stopped before it started (its callers are gone with it)
        jobs, self._pending, self._loop = self._pending or [], None, None
        futures = [future for _job, future in jobs]
        self.hops += 1
        try:
            hop = loop.run_in_executor(None, _run_all, [job for job, _future in jobs])
        except RuntimeError as error:  # the executor is shut down (the daemon is stopping)
            for future in futures:
                if not future.done():
                    future.set_exception(error)
            return
        hop.add_done_callback(lambda done: _hand_out(done, futures))


def _run_all(jobs: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
    """In the worker thread: each job's (ok, result or exception), in order."""
    outcomes: list[tuple[bool, Any]] = []
    for job in jobs:
        try:
            outcomes.append((True, job()))
        except Exception as error:  # noqa: BLE001 - raised to the job's own caller
            outcomes.append((False, error))
    return outcomes


def _hand_out(hop: asyncio.Future[list[tuple[bool, Any]]], futures: list[asyncio.Future[Any]]) -> None:
    """On the loop: each caller's outcome (a caller that gave up, e.g. at its timeout, is skipped)."""
    if hop.cancelled():
        for future in futures:
            if not future.done():
                future.cancel()
        return
    error = hop.exception()
    for index, future in enumerate(futures):
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
            continue
        ok, value = hop.result()[index]
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
