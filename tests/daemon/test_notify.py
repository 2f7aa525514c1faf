"""`rollbackd run` under a service manager: sd_notify datagrams on a real AF_UNIX socket the test binds, the way
systemd runs a Type=notify unit with WatchdogSec= (NOTIFY_SOCKET and WATCHDOG_USEC in the environment at exec, so
systemd-python's notify(), which reads the C environment, is what sends them)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from rollbackd.probes import PROBE_NAMES
from tests.daemon.notify_listener import Datagram, NotifyListener
from tests.daemon.rollbackd_process import Samples, daemon_toml, rollbackd_run, scrape, service_toml
from tests.probes.example_app import VbrpgApp, serving

pytestmark = pytest.mark.e2e

WATCHDOG_USEC = 1_000_000
WATCHED_INTERVALS = 4
STATUS_LINE = re.compile(r"vbrpg: OK, last backup \d+[smhd] ago")


@pytest.mark.parametrize("notify", ["path", "abstract"], indirect=True)
def test_rollbackd_run_is_ready_after_the_first_probe_round_then_pings_and_says_stopping_on_sigterm(
    tmp_path: Path, make_app: Callable[[str], VbrpgApp], notify: NotifyListener, metrics_port: int
) -> None:
    app = make_app("vbrpg")
    with serving(app):
        room = app.create_room()
        # The health check answers only after 1.5 s (its one run: every = 1h), so the first round ends with it: a
        # READY=1 sent before the round was complete would find its series missing from /metrics.
        app.chaos(health_delay_seconds=1.5)
        config = tmp_path / "rollbackd.toml"
        config.write_text(
            daemon_toml(tmp_path / "state", metrics_port)
            + service_toml(app, "vbrpg", health_every="1h", health_timeout="10s", latency_path=f"/api/rooms/{room}")
        )
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        at_ready: list[Samples | None] = []

        def scrape_at_ready(datagram: Datagram) -> None:
            """Runs before the listener reads the next datagram: /metrics as it was when READY=1 came."""
            if datagram.says("READY", "1") and not at_ready:
                at_ready.append(scrape(url))

        notify.on_datagram = scrape_at_ready
        environment = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        with rollbackd_run(config, tmp_path / "state", metrics_port, **environment) as daemon:
            ready_index = notify.wait_index("READY", "1")
            ready = notify.datagrams[ready_index]
            notify.wait_for(
                lambda seen: [d for d in seen if STATUS_LINE.fullmatch(d.assignments.get("STATUS", ""))],
                "STATUS=vbrpg: OK, last backup ... ago",
            )
            window_end = ready.received_at + WATCHED_INTERVALS * WATCHDOG_USEC / 1e6
            notify.wait_for(
                lambda seen: any(d.received_at > window_end for d in seen), f"{WATCHED_INTERVALS} watchdog intervals"
            )
            daemon.assert_running()
            assert daemon.stop() == 0, daemon.log_tail()
            stopping = notify.wait_index("STOPPING", "1")

    datagrams = notify.datagrams
    log = daemon.log_text()
    # systemd-python sent them (as under systemd): the daemon says which backend it picked.
    assert f"notifying the service manager at {notify.address} through systemd-python" in log, log

    # READY=1 came once, after the first round: every probe had reported, the slow health check included.
    assert [d.payload for d in datagrams].count("READY=1") == 1
    [samples] = at_ready
    assert samples is not None, "the metrics listener was not up when READY=1 came"
    assert samples.probes_reported("vbrpg") == set(PROBE_NAMES)
    health_done = samples.get("rollbackd_probe_last_run_timestamp_seconds", service="vbrpg", probe="health")
    assert health_done is not None and health_done <= ready.received_at
    assert not any(d.says("STATUS") for d in datagrams[:ready_index])  # the summary needs the first round too

    # At least one ping per WATCHDOG_USEC (they are due every half of it) while the daemon ran.
    pings = [d for d in datagrams if d.says("WATCHDOG", "1") and ready.received_at <= d.received_at <= window_end]
    assert len(pings) >= WATCHED_INTERVALS, [d.payload for d in datagrams]

    # STOPPING=1 on SIGTERM, after everything else the daemon said while running.
    assert stopping > ready_index
    assert "received SIGTERM, shutting down" in log
    assert "Traceback" not in log
