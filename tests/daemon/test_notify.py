"""`rollbackd run` under a service manager: sd_notify datagrams on a real AF_UNIX socket the test binds, the way
systemd runs a Type=notify unit with WatchdogSec= (NOTIFY_SOCKET and WATCHDOG_USEC in the environment at exec, so
systemd-python's notify(), which reads the C environment, is what sends them)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.probes.example_app import VbrpgApp, serving
from tests.support.notify_listener import Datagram, NotifyListener
from tests.support.rollbackd_config import daemon_toml, service_toml
from tests.support.rollbackd_daemon import Samples, rollbackd_run, scrape, wait_for

pytestmark = pytest.mark.e2e

WATCHDOG_USEC = 1_000_000
API_DELAY = 6.0  # seconds the latency path takes to answer (under the probe's 10 s timeout)
WATCHED_INTERVALS = 4
STATUS_LINE = re.compile(r"vbrpg: OK, last backup \d+[smhd] ago")


@pytest.mark.parametrize("notify", ["path", "abstract"], indirect=True)
def test_rollbackd_run_is_ready_once_the_first_probe_round_began_then_pings_and_says_stopping_on_sigterm(
    tmp_path: Path, make_app: Callable[[str], VbrpgApp], notify: NotifyListener, metrics_port: int
) -> None:
    app = make_app("vbrpg")
    with serving(app):
        room = app.create_room()
        # The latency path answers only after API_DELAY seconds (a slow service): READY=1 must not wait for it, as
        # it did when it waited for the whole first round (up to the latency probe's 10 s timeout).
        app.chaos(api_delay_seconds=API_DELAY)
        config = tmp_path / "rollbackd.toml"
        config.write_text(
            daemon_toml(tmp_path / "state", metrics_port)
            + service_toml(app, "vbrpg", every="1h", latency_path=f"/api/rooms/{room}")
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
            latency_done = wait_for(
                lambda: (daemon.scrape() or Samples({})).get(
                    "rollbackd_probe_last_run_timestamp_seconds", service="vbrpg", probe="latency"
                ),
                "the slow latency probe's first result",
                log=daemon.log_tail,
            )
            app.chaos(api_delay_seconds=0)
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

    # READY=1 came once, with the metrics listener up and the first round begun, before the slow latency probe's
    # first result: that probe did not hold readiness back.
    assert [d.payload for d in datagrams].count("READY=1") == 1
    [samples] = at_ready
    assert samples is not None, "the metrics listener was not up when READY=1 came"
    assert "latency" not in samples.probes_reported("vbrpg")
    assert latency_done > ready.received_at
    assert "ready: first probe round started" in log
    assert not any(d.says("STATUS") for d in datagrams[:ready_index])  # the summary comes with readiness

    # At least one ping per WATCHDOG_USEC (they are due every half of it) while the daemon ran.
    pings = [d for d in datagrams if d.says("WATCHDOG", "1") and ready.received_at <= d.received_at <= window_end]
    assert len(pings) >= WATCHED_INTERVALS, [d.payload for d in datagrams]

    # STOPPING=1 on SIGTERM, after everything else the daemon said while running.
    assert stopping > ready_index
    assert "received SIGTERM, shutting down" in log
    assert "Traceback" not in log
