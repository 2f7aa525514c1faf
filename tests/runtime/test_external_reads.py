"""The daemon's one reader of what other processes change about a service (its lock, deploy windows, blocked
revisions): changes made by another process, a real `rollbackd unblock` or a real lock holder, are seen within one
refresh although the reader re-reads only what its change stamps say moved; this process's own writes are seen
at once after refresh(); and a window that closes on time is gone though nothing was written."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rollbackd.config.model import Config, parse_config
from rollbackd.policy.deploys import DeployTracker
from rollbackd.runtime.external_reads import EXTERNAL_REFRESH, ExternalReads, ServiceExternal
from rollbackd.state.history import History
from rollbackd.state.service_lock import RACY_MTIME, ServiceLock

HOLDER = """
import sys
from pathlib import Path
from rollbackd.state.service_lock import ServiceLock
lock = ServiceLock(Path(sys.argv[1]), sys.argv[2], "rollbackd migrate", changes_database=True)
lock.acquire()
print("held", flush=True)
if sys.stdin.readline():
    lock.release()
    print("released", flush=True)
    sys.stdin.readline()
"""

OPEN_WINDOW = """
import sys
from pathlib import Path
from rollbackd.state.history import History
History(Path(sys.argv[1])).open_deploy(sys.argv[2], "migrate", 600.0, from_revision="r1")
"""


class Side:
    """The daemon's side: one History (its shared connection), the reader on a stepped refresh clock."""

    def __init__(self, root: Path, services: int = 2) -> None:
        blocks = "".join(
            f'[[service]]\nname = "svc-{index}"\nworkdir = "{root}"\ndatabase = "svc-{index}.db"\n'
            f'base_url = "http://127.0.0.1:9"\n\n'
            for index in range(services)
        )
        self.config_path = root / "rollbackd.toml"
        self.config_path.write_text(f'[daemon]\nstate_dir = "{root / "state"}"\n\n{blocks}')
        self.config: Config = parse_config(self.config_path.read_text(), self.config_path)
        self.state = self.config.daemon.state_dir
        self.now = 1000.0  # the history's wall clock (deploy windows close on it)
        self.history = History(self.state / "rollbackd.db", clock=lambda: self.now)
        self.history.upgrade()
        self.monotonic = 0.0
        self.reads = ExternalReads(self.history, self.state, monotonic=lambda: self.monotonic)
        self.watches = [
            self.reads.watch(service.name, DeployTracker(service, self.history, lambda: self.now))
            for service in self.config.service
        ]

    def get(self, watch: ServiceExternal) -> tuple[object, ...]:
        return asyncio.run(watch.get())

    def one_refresh_later(self, watch: ServiceExternal) -> tuple[object, ...]:
        self.monotonic += EXTERNAL_REFRESH
        return self.get(watch)


@pytest.fixture
def side(tmp_path: Path) -> Side:
    return Side(tmp_path)


def rollbackd(side: Side, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", "--config", str(side.config_path), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_revision_unblocked_by_the_cli_and_a_window_opened_elsewhere_are_seen_within_one_refresh(
    side: Side,
) -> None:
    watch, other = side.watches
    side.history.block_revision(watch.name, "bad1", "data loss", None)
    assert side.get(watch) == (None, None, frozenset({"bad1"}))
    # Nothing changed: the next refresh answers the same (from the stamps, without the queries).
    assert side.one_refresh_later(watch) == (None, None, frozenset({"bad1"}))

    result = rollbackd(side, "unblock", watch.name, "bad1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert side.get(watch)[2] == {"bad1"}  # within the refresh interval: the last read stands, as before
    assert side.one_refresh_later(watch)[2] == frozenset()

    # Another process's connection opens a window for the other service (real clock: it closes in 10 min).
    subprocess.run([sys.executable, "-c", OPEN_WINDOW, str(side.history.path), other.name], check=True, timeout=60)
    side.now = time.time()
    window = side.one_refresh_later(other)[1]
    assert window is not None and window.trigger == "migrate" and window.from_revision == "r1"
    assert side.get(watch)[1] is None  # one service's window is not another's
    assert side.reads.hops == 4  # one hop a refresh served both services


def test_a_window_that_closes_on_time_is_gone_though_nothing_was_written(side: Side) -> None:
    watch = side.watches[0]
    side.history.open_deploy(watch.name, "migration_arrived", 30.0, from_revision="r1")
    window = side.get(watch)[1]
    assert window is not None and window.closes_at == side.now + 30.0
    side.now += 29.0
    assert side.one_refresh_later(watch)[1] == window
    side.now += 2.0
    assert side.one_refresh_later(watch)[1] is None


def test_this_processs_own_write_is_seen_at_once_after_refresh(side: Side) -> None:
    watch = side.watches[0]
    assert side.get(watch) == (None, None, frozenset())
    # PRAGMA data_version ignores the connection's own commits: the write count stands in for them.
    side.history.block_revision(watch.name, "bad2", "data loss", None)
    watch.refresh()
    assert side.get(watch)[2] == {"bad2"}  # no refresh interval waited
    side.history.unblock_revision(watch.name, "bad2")
    assert side.one_refresh_later(watch)[2] == frozenset()  # and without refresh(), within one refresh


def stop(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait(timeout=10)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    process.stdout.close()


def test_a_lock_holder_in_another_process_is_seen_taking_releasing_and_dying(side: Side) -> None:
    watch = side.watches[0]
    with ServiceLock(side.state, watch.name, "backup (scheduled)"):
        pass
    holder_before = side.get(watch)[0]
    assert holder_before is not None and not holder_before.held

    def start_holder() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(side.state), watch.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None and process.stdout.readline().strip() == "held"
        return process

    holder = start_holder()
    try:
        seen = side.one_refresh_later(watch)[0]
        assert seen is not None and seen.held and seen.pid == holder.pid and seen.changes_database
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        seen = side.one_refresh_later(watch)[0]
        assert seen is not None and not seen.held and seen.released is not None
    finally:
        stop(holder)

    # A holder killed while it holds writes nothing on its way out: the kernel's unlock alone must be seen, also
    # of a lock held so long that its file's stat is trusted.
    holder = start_holder()
    try:
        old = time.time_ns() - int(RACY_MTIME * 2e9)
        os.utime(watch.lock.path, ns=(old, old))
        seen = side.one_refresh_later(watch)[0]
        assert seen is not None and seen.held and seen.pid == holder.pid
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        seen = side.one_refresh_later(watch)[0]
        assert seen is not None and not seen.held and seen.pid == holder.pid
    finally:
        stop(holder)


def test_a_lock_file_rewritten_within_its_timestamp_tick_is_read_again(tmp_path: Path) -> None:
    """A rewrite that leaves size and mtime as they were (two writes within one timestamp tick) must not pass
    for the text read before: a file written less than RACY_MTIME before a look is read at the next look too."""
    lock = ServiceLock(tmp_path, "svc", "")
    lock.path.parent.mkdir()
    lock.path.write_text('{"pid": 101, "purpose": "backup (scheduled)", "since": 1.5, "released": 2.5}')
    look = lock.look()
    assert look.holder is not None and look.holder.pid == 101 and not look.holder.held
    assert look.file_key is None  # just written: not trusted
    written = lock.path.stat()
    lock.path.write_text('{"pid": 202, "purpose": "backup (scheduled)", "since": 3.5, "released": 4.5}')
    os.utime(lock.path, ns=(written.st_atime_ns, written.st_mtime_ns))
    assert lock.path.stat().st_size == written.st_size
    again = lock.look(look)
    assert again.holder is not None and again.holder.pid == 202

    old = time.time_ns() - int(RACY_MTIME * 2e9)
    os.utime(lock.path, ns=(old, old))
    settled = lock.look(again)
    assert settled.file_key is not None and lock.look(settled) is settled  # an old, unchanged file: one stat
