"""The watchdog ping comes from the event loop's own tick: a loop that stops running stops the pings (so systemd
kills a hung daemon), and a loop that runs keeps pinging even while a reload waits for something."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rollbackd.config.model import parse_config
from rollbackd.runtime.daemon import Daemon
from rollbackd.runtime.systemd import Notifier
from rollbackd.state.service_lock import ServiceLock
from tests.probes.example_app import VbrpgApp, serving
from tests.support.notify_listener import NotifyListener
from tests.support.rollbackd_config import daemon_toml, service_toml
from tests.support.rollbackd_daemon import rollbackd_run

WATCHDOG_USEC = 400_000  # pings due every 0.2 s
BLOCKED_INTERVALS = 5


@contextmanager
def daemon_in_thread(daemon: Daemon) -> Iterator[asyncio.AbstractEventLoop]:
    """Serve ``daemon`` on its own loop in a thread (signal handlers stay with the main thread); yield the loop.
    At the end ask it to exit, as SIGTERM would, and re-raise whatever serve() raised."""
    loops: list[asyncio.AbstractEventLoop] = []
    errors: list[BaseException] = []
    started = threading.Event()

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        started.set()
        await daemon.serve()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as error:  # noqa: BLE001 - handed to the test's thread below
            errors.append(error)
        finally:
            started.set()

    thread = threading.Thread(target=run, name="daemon")
    thread.start()
    started.wait(30)
    try:
        if errors:
            raise errors[0]
        yield loops[0]
    finally:
        if loops and thread.is_alive():
            loops[0].call_soon_threadsafe(daemon.request_exit)
        thread.join(60)
        assert not thread.is_alive(), "the daemon did not stop"
    if errors:
        raise errors[0]


def test_a_blocked_event_loop_sends_no_watchdog_ping_until_it_runs_again(
    tmp_path: Path, make_app: Callable[[str], VbrpgApp], notify: NotifyListener, metrics_port: int
) -> None:
    app = make_app("vbrpg")
    # The backup dir exists before the file watch starts: its creation under the watched workdir would race
    # the watchdog library's inotify bookkeeping (a RuntimeWarning on its thread, an error under pytest).
    (app.database.parent / "backups").mkdir(mode=0o700)
    with serving(app):
        config = parse_config(
            daemon_toml(tmp_path / "state", metrics_port) + service_toml(app, "vbrpg"), tmp_path / "rollbackd.toml"
        )
        # An injected environment naming the test's socket: the Notifier sends its own datagrams (systemd-python
        # would read this process's environment, which names no socket).
        notifier = Notifier({"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        assert notifier.backend == "socket"
        daemon = Daemon(config, notifier=notifier)
        with daemon_in_thread(daemon) as loop:
            ready = notify.wait_index("READY", "1")
            notify.wait_for(lambda seen: len([d for d in seen[ready:] if d.says("WATCHDOG")]) >= 3, "3 pings")

            def block() -> None:
                """On the loop's thread: nothing else runs on the loop until this returns."""
                notify.send_marker("blocked")
                time.sleep(BLOCKED_INTERVALS * WATCHDOG_USEC / 1e6)
                notify.send_marker("unblocked")

            loop.call_soon_threadsafe(block)
            blocked = notify.wait_index("X_TEST_MARKER", "blocked", start=ready)
            unblocked = notify.wait_index("X_TEST_MARKER", "unblocked", start=blocked)
            resumed = notify.wait_index("WATCHDOG", "1", start=unblocked)

    datagrams = notify.datagrams
    assert any(d.says("WATCHDOG") for d in datagrams[ready:blocked])  # it was pinging before
    assert [d.payload for d in datagrams[blocked + 1 : unblocked]] == []  # not a ping while blocked
    assert resumed > unblocked
    # The first tick after the block ran far later than due, which is no healthy loop: no ping from it yet.
    assert not datagrams[unblocked + 1].says("WATCHDOG")


@pytest.mark.e2e
def test_pings_go_on_while_a_reload_waits_for_the_service_lock(
    tmp_path: Path, make_app: Callable[[str], VbrpgApp], notify: NotifyListener, metrics_port: int
) -> None:
    """A reload restarts a changed service, which first waits (up to 30 s) for the service lock to look for an
    interrupted restore; `rollbackd backup` or `rollbackd migrate` may hold that lock for minutes. The loop is
    healthy all along, so systemd must keep hearing from it: a reload is not a hung daemon."""
    app = make_app("vbrpg")
    with serving(app):
        config = tmp_path / "rollbackd.toml"
        head = daemon_toml(tmp_path / "state", metrics_port)
        config.write_text(head + service_toml(app, "vbrpg"))
        with rollbackd_run(
            config, tmp_path / "state", metrics_port, NOTIFY_SOCKET=notify.address, WATCHDOG_USEC=str(WATCHDOG_USEC)
        ) as daemon:
            notify.wait_index("READY", "1")
            lock = ServiceLock(tmp_path / "state", "vbrpg", "a test holding the lock as `rollbackd migrate` would")
            lock.acquire(timeout=30)
            try:
                config.write_text(head + service_toml(app, "vbrpg", every="300ms"))
                daemon.signal(signal.SIGHUP)
                reloading = notify.wait_index("RELOADING", "1")
                notify.wait_for(
                    lambda seen: len([d for d in seen[reloading:] if d.says("WATCHDOG")]) >= 3,
                    "3 watchdog pings while the reload waits for the service lock",
                    timeout=15,
                )
                assert not any(d.says("READY") for d in notify.datagrams[reloading:])  # still waiting for the lock
            finally:
                lock.release()
            notify.wait_index("READY", "1", start=reloading)
            assert daemon.stop() == 0, daemon.log_tail()
    daemon.assert_no_traceback()
