"""A long reader starving checkpoints, for real: one process holds a read transaction while another writes.
The lock probe names the reader from /proc/locks, the wal-growing rule reads it (alert only, never an action),
and `status` names its pid."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rollbackd.cli.status import render
from rollbackd.config.model import ConfigError, parse_config
from rollbackd.observation import Observation
from rollbackd.policy.conditions import WAL_GROWING_MIN_BYTES, ServiceView, evaluate
from rollbackd.policy.rules import effective_rules
from rollbackd.probes import ProbeContext, observe
from rollbackd.probes.sqlite_lock import SqliteLockProbe, wal_summary
from tests.probes.probe_support import service_config
from tests.probes.sqlite_processes import create_database

READER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN")
connection.execute("SELECT count(*) FROM t").fetchall()  # the read transaction pins this point of the WAL
print("reading", flush=True)
sys.stdin.readline()
connection.execute("COMMIT")
"""

WRITER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
for _ in range(int(sys.argv[2])):
    connection.execute("INSERT INTO t VALUES (randomblob(65536))")
"""


@contextmanager
def long_reader(database: Path) -> Iterator[subprocess.Popen[str]]:
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
        yield reader
    finally:
        reader.kill()
        reader.wait()
        for stream in (reader.stdin, reader.stdout):
            if stream is not None:
                stream.close()


def write_rows(database: Path, rows: int) -> None:
    subprocess.run([sys.executable, "-c", WRITER, str(database), str(rows)], check=True, timeout=120)


def test_a_long_reader_makes_the_wal_grow_and_is_named_but_nothing_is_done(
    tmp_path: Path, context: ProbeContext
) -> None:
    database = tmp_path / "vbrpg.db"
    create_database(database, "wal")
    write_rows(database, 1)
    service = service_config(tmp_path, database=database, extra='[[service.rules]]\nname = "wal-growing"\nfor = "1s"')
    probe = SqliteLockProbe(service, context)
    with long_reader(database) as reader:
        write_rows(database, WAL_GROWING_MIN_BYTES // 65536 + 64)  # past the floor: checkpoints cannot pass the reader
        first = asyncio.run(observe(probe))
        write_rows(database, 64)
        second = asyncio.run(observe(probe))

        assert second.values["wal_size_bytes"] > first.values["wal_size_bytes"] >= WAL_GROWING_MIN_BYTES
        assert [reader_["pid"] for reader_ in second.detail["wal_readers"]] == [reader.pid]
        rule = {rule.name: rule for rule in effective_rules(service)}["wal-growing"]
        assert not rule.acts  # alert only
        reading = evaluate(rule, view([first, second], now=second.started_at + 1.5))
        assert reading is not None
        assert f"read transaction held by pid {reader.pid}" in reading.explanation
        assert reading.evidence["readers"][0]["pid"] == reader.pid

        status = {"daemon": None, "services": {"vbrpg": {"policy": {"state": "ok"}, "wal": wal_summary(second)}}}
        line = next(line for line in render(status, second.started_at).splitlines() if "wal:" in line)
        assert f"read transaction open in pid {reader.pid}" in line, line
    # Not growing any more (the reader is gone, the file keeps its size): the signal is quiet.
    third = asyncio.run(observe(probe))
    assert third.detail["wal_readers"] == []
    assert evaluate(rule, view([second, third], now=third.started_at + 1.5)) is None


def view(observations: list[Observation], now: float) -> ServiceView:
    return ServiceView("vbrpg", now, {"sqlite_lock": observations})


@pytest.mark.parametrize("action", ["restart", "restore", "downgrade"])
def test_wal_growing_can_only_alert(tmp_path: Path, action: str) -> None:
    text = f"""
[[service]]
name = "vbrpg"
workdir = "."
database = "vbrpg.db"
base_url = "http://127.0.0.1:9"

[[service.rules]]
name = "wal-growing"
action = "{action}"
"""
    with pytest.raises(ConfigError, match="DO NOT roll back"):
        parse_config(text, tmp_path / "rollbackd.toml")
