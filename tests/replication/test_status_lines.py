"""`rollbackd status` says how replication is doing, from the status document the daemon serves."""

from __future__ import annotations

from rollbackd.cli.status import render


def status_with(replication: dict[str, object]) -> dict[str, object]:
    return {"daemon": None, "services": {"vbrpg": {"policy": {"state": "ok"}, "replication": replication}}}


def test_a_healthy_replica_shows_its_lag_and_snapshot_age() -> None:
    text = render(
        status_with(
            {
                "state": "running",
                "ok": True,
                "reason": "",
                "replicated_at": 990.0,
                "lag_seconds": 0.0,
                "snapshot_at": 400.0,
            }
        ),
        now=1000.0,
    )
    assert "  replication: running, replicated 10s ago, lag 0s, snapshot 10m ago" in text.splitlines()


def test_a_replica_that_is_down_says_why() -> None:
    text = render(
        status_with(
            {
                "state": "running",
                "ok": False,
                "reason": "unreachable",
                "probe_error": "litestream ltx: no answer in 15s",
            }
        ),
        now=1000.0,
    )
    assert "  replication: DOWN: unreachable (litestream ltx: no answer in 15s); running" in text.splitlines()


def test_an_operator_unit_is_named() -> None:
    text = render(status_with({"managed": False, "unit": "litestream.service", "state": "running"}), now=0.0)
    assert "  replication: unit litestream.service" in text.splitlines()
