"""Real parts for the backup tests: example-schema SQLite files, service configs, a writer process, the example."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollbackd.config.model import ServiceConfig, parse_config
from tests.support.vbrpg_service import free_port

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
REVISION = "e6093b7a4c18"
TABLES = ["game_rooms", "players", "game_room_participants"]

# The example service's schema at its head revision (as `vbrpg-example migrate` leaves it).
SCHEMA = """
CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));
CREATE TABLE players (
    id INTEGER NOT NULL, name VARCHAR(40) NOT NULL, created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    CONSTRAINT pk_players PRIMARY KEY (id), CONSTRAINT uq_players_name UNIQUE (name));
CREATE TABLE game_rooms (
    id INTEGER NOT NULL, code VARCHAR(6) NOT NULL, name VARCHAR(80) NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL, status VARCHAR(16) DEFAULT 'waiting' NOT NULL,
    max_players INTEGER DEFAULT '8' NOT NULL,
    CONSTRAINT pk_game_rooms PRIMARY KEY (id), CONSTRAINT uq_game_rooms_code UNIQUE (code));
CREATE TABLE game_room_participants (
    id INTEGER NOT NULL, room_id INTEGER NOT NULL, player_id INTEGER, is_host BOOLEAN DEFAULT '0' NOT NULL,
    joined_at DATETIME DEFAULT (CURRENT_TIMESTAMP) NOT NULL, is_ai BOOLEAN DEFAULT '0' NOT NULL,
    agent_name VARCHAR(40), CONSTRAINT pk_game_room_participants PRIMARY KEY (id),
    CONSTRAINT fk_game_room_participants_player_id_players FOREIGN KEY(player_id) REFERENCES players (id),
    CONSTRAINT fk_game_room_participants_room_id_game_rooms FOREIGN KEY(room_id) REFERENCES game_rooms (id)
        ON DELETE CASCADE);
CREATE INDEX ix_game_room_participants_room_id ON game_room_participants (room_id);
CREATE UNIQUE INDEX ix_game_room_participants_player_id_room_id ON game_room_participants (player_id, room_id);
"""


def make_database(
    path: Path, *, journal_mode: str = "wal", players: int = 10, rooms: int = 2, revision: str = REVISION
) -> Path:
    """An example-schema database with ``players`` players and ``rooms`` rooms (each player seated in room 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute(f"PRAGMA journal_mode = {journal_mode}")
        connection.executescript(SCHEMA)
        connection.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
        connection.execute("BEGIN")
        for room in range(1, rooms + 1):
            connection.execute("INSERT INTO game_rooms (id, code, name) VALUES (?, ?, ?)", (room, f"R{room:05d}", "r"))
        for player in range(1, players + 1):
            connection.execute("INSERT INTO players (id, name) VALUES (?, ?)", (player, f"player-{player}"))
            if rooms:
                connection.execute("INSERT INTO game_room_participants (room_id, player_id) VALUES (1, ?)", (player,))
        connection.execute("COMMIT")
    return path


def grow_database(path: Path, megabytes: int) -> None:
    """Pad the database to about ``megabytes`` with a blob table (not one of the watched tables)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS padding (data BLOB)")
        connection.execute("BEGIN")
        for _ in range(megabytes * 16):
            connection.execute("INSERT INTO padding VALUES (randomblob(65536))")
        connection.execute("COMMIT")


def rows(path: Path, table: str = "players") -> list[tuple[Any, ...]]:
    """Every row of ``table`` in id order (row for row comparisons)."""
    uri = f"file:{path}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as connection:
        return connection.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()  # noqa: S608


def count(path: Path, table: str = "players") -> int:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


def service_toml(
    tmp_path: Path,
    *,
    database: str = "data/vbrpg.db",
    control: str = 'kind = "none"',
    backups: dict[str, Any] | None = None,
    deploy: str = "",
    extra: str = "",
) -> str:
    settings: dict[str, Any] = {"dir": "data/backups", "min_free_bytes": 0, "min_free_ratio": 0.0, **(backups or {})}
    backup_lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in settings.items())
    return f"""
[daemon]
state_dir = "{tmp_path / "state"}"

[[service]]
name = "vbrpg"
workdir = "{tmp_path / "app"}"
database = "{database}"
base_url = "http://127.0.0.1:8000"
{extra}

[service.control]
{control}

[service.backups]
{backup_lines}

[service.deploy]
{deploy}
"""


def make_service(tmp_path: Path, **options: Any) -> ServiceConfig:
    """The service as ``load_config`` resolves it; the TOML is also written to tmp_path/rollbackd.toml."""
    text = service_toml(tmp_path, **options)
    config_path = tmp_path / "rollbackd.toml"
    config_path.write_text(text)
    return parse_config(text, config_path).service[0]


def rollbackd(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02) -> None:
    """Tests may poll (library code may not): wait for ``predicate`` or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class Writer:
    """A separate process inserting players with ids 1, 2, 3, ... one row per transaction."""

    def __init__(self, database: Path, interval: float = 0.002) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "writer_process.py"), str(database), str(interval)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.database = database

    def wait_for_rows(self, at_least: int) -> None:
        wait_until(lambda: self.process.poll() is not None or count(self.database) >= at_least)
        assert self.process.poll() is None, self.process.communicate()

    def stop(self) -> dict[str, Any]:
        """Stop it and return what it reports: rows inserted, errors seen, worst insert latency."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, err
        report: dict[str, Any] = json.loads(out)
        return report


# -- the real example service ---------------------------------------------------------------------------------


def example_available() -> bool:
    return (BIN / "vbrpg-example").exists()


@dataclass(frozen=True)
class ExampleApp:
    """An app dir made by ``vbrpg-example init-app`` (the runbook's backend/ folder), migrated and seeded."""

    root: Path
    app_dir: Path
    database: Path
    pidfile: Path
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "vbrpg-example"), *args], capture_output=True, text=True, timeout=120, check=False
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def start_argv(self) -> list[str]:
        return [
            str(BIN / "vbrpg-example"), "serve", "--db", str(self.database), "--app-dir", str(self.app_dir),
            "--port", str(self.port), "--detach", "--pidfile", str(self.pidfile),
        ]  # fmt: skip

    def stop_argv(self) -> list[str]:
        return [str(BIN / "vbrpg-example"), "stop", "--pidfile", str(self.pidfile)]

    def control_toml(self) -> str:
        return f'kind = "command"\nstart = {json.dumps(self.start_argv())}\nstop = {json.dumps(self.stop_argv())}'

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def stop(self) -> None:
        if self.pidfile.exists():
            self.cli(*self.stop_argv()[1:], check=False)


def make_example_app(root: Path, *, players: int = 5, rooms: int = 3, target: str = "head") -> ExampleApp:
    """init-app into root/app with the database in root/app/data, migrate to ``target``, seed."""
    app_dir = root / "app"
    database = app_dir / "data" / "vbrpg.db"
    example = ExampleApp(root, app_dir, database, root / "run" / "vbrpg.pid", free_port())
    example.cli("init-app", str(app_dir), "--db", str(database))
    database.parent.mkdir(parents=True, exist_ok=True)
    example.cli("migrate", "--db", str(database), "--app-dir", str(app_dir), target)
    if players or rooms:
        example.cli("seed", "--db", str(database), "--rooms", str(rooms), "--players", str(players))
    return example


def copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target)
