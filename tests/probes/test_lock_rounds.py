"""One thread hop for the lock probes' jobs asked for in one turn of the loop, each answer to its own caller."""

from __future__ import annotations

import asyncio
import threading

import pytest

from rollbackd.probes.lock_rounds import LockRounds


def test_jobs_asked_in_one_turn_share_a_worker_thread_and_each_gets_its_own_answer() -> None:
    rounds = LockRounds()
    threads: list[int] = []

    def job(value: int) -> int:
        threads.append(threading.get_ident())
        return value * 10

    async def main() -> tuple[list[int], int]:
        answers = await asyncio.gather(*(rounds.run(lambda value=value: job(value)) for value in range(5)))
        later = await rounds.run(lambda: job(7))  # a later turn: a round of its own
        return list(answers), later

    answers, later = asyncio.run(main())
    assert answers == [0, 10, 20, 30, 40]
    assert later == 70
    assert rounds.hops == 2
    assert len(set(threads[:5])) == 1 and threads[0] != threading.get_ident()


def test_a_failing_job_raises_to_its_own_caller_only() -> None:
    rounds = LockRounds()

    def missing() -> int:
        raise FileNotFoundError("gone.db")

    async def main() -> list[int | BaseException]:
        return await asyncio.gather(
            rounds.run(lambda: 1), rounds.run(missing), rounds.run(lambda: 3), return_exceptions=True
        )

    first, second, third = asyncio.run(main())
    assert (first, third) == (1, 3)
    assert isinstance(second, FileNotFoundError)
    assert rounds.hops == 1


def test_a_caller_that_gave_up_is_skipped_and_the_others_still_answered() -> None:
    rounds = LockRounds()
    release = threading.Event()

    def slow() -> str:
        release.wait(10)
        return "late"

    async def main() -> tuple[str, str]:
        gave_up = asyncio.ensure_future(rounds.run(slow))
        waited = asyncio.ensure_future(rounds.run(lambda: "kept"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        gave_up.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await gave_up
        return "cancelled", await waited

    assert asyncio.run(main()) == ("cancelled", "kept")
