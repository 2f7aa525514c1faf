"""A real ``litestream replicate`` child for tests that are about the restore, not about the supervisor: started
with the service's generated config, stopped and started again by ``pause``/``resume`` (the ReplicationPause
protocol), and waited on by restoring the replica's newest moment and looking for a row."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from rollbackd.config.model import ServiceConfig
from rollbackd.replication import litestream
from rollbackd.state.state_dir import StateDir
from tests.backup.helpers import wait_until


class LitestreamChild:
    def __init__(self, service: ServiceConfig, state_dir: StateDir, log: Path) -> None:
        self.service = service
        self.runner = litestream.prepare(service, state_dir)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.pauses = 0

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                self.runner.replicate_argv(),
                env=dict(self.runner.env),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def pause(self) -> None:
        self.pauses += 1
        self.stop()

    def resume(self) -> None:
        self.start()

    def wait_replicated(self, scratch: Path, player: str) -> None:
        """Until the replica's newest moment holds the player named ``player``."""
        wait_until(lambda: player in self.players_in_replica(scratch), timeout=60, interval=0.3)

    def players_in_replica(self, scratch: Path, point: str | None = None) -> set[str]:
        output = scratch / "probe.db"
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{output}{suffix}").unlink()
        argv = self.runner.restore_argv(output)
        if point is not None:
            argv = [*argv[:-1], "-timestamp", point, argv[-1]]
        if not self.runner.run(argv, timeout=60).ok or not output.exists():
            return set()
        return players(output)


def players(database: Path) -> set[str]:
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        return {str(row[0]) for row in connection.execute("SELECT name FROM players")}
