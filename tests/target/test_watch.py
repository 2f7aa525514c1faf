"""The deploy watcher: a migration script arriving is one event, delivered on the loop; noise is ignored."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import replace
from pathlib import Path

from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from rollbackd.config.model import ServiceConfig, parse_config
from rollbackd.target.watch import DeployEvent, DeployWatcher, SharedObserver

MIGRATION = '"""add a column"""\nrevision = "abc123"\ndown_revision = None\n'


def service(tmp_path: Path, extra: str = "") -> ServiceConfig:
    app = tmp_path / "app"
    (app / "alembic" / "versions").mkdir(parents=True)
    (app / "src").mkdir()
    (app / "data" / "backups").mkdir(parents=True)
    text = f"""
[[service]]
name = "vbrpg"
workdir = "{app}"
database = "data/vbrpg.db"
base_url = "http://127.0.0.1:8000"
{extra}
"""
    return parse_config(text, tmp_path / "rollbackd.toml").service[0]


def watch(config: ServiceConfig, changes: list[tuple[str, bytes]], *, debounce: float = 0.3) -> list[DeployEvent]:
    """Start a watcher, make the changes (path relative to workdir, content), return the events of one burst."""
    events: list[DeployEvent] = []

    async def main() -> None:
        delivered = asyncio.Event()
        loop_thread_ok = []

        def on_event(event: DeployEvent) -> None:
            loop_thread_ok.append(asyncio.get_running_loop() is not None)
            events.append(event)
            delivered.set()

        watcher = DeployWatcher(config, on_event, debounce=debounce)
        watcher.start()
        try:
            for relative, content in changes:
                path = config.workdir / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            await asyncio.wait_for(delivered.wait(), 30)
            await asyncio.sleep(debounce * 3)  # a second, unwanted event would arrive here
        finally:
            watcher.stop()
        assert all(loop_thread_ok)

    asyncio.run(main())
    return events


def watching(
    config: ServiceConfig,
    changes: Callable[[list[DeployEvent], asyncio.Event], Awaitable[None]],
    *,
    debounce: float,
) -> list[DeployEvent]:
    """Start a watcher, await ``changes(events, delivered)`` (the events so far, set at each delivery), return
    every event delivered."""
    events: list[DeployEvent] = []

    async def main() -> None:
        delivered = asyncio.Event()

        def on_event(event: DeployEvent) -> None:
            events.append(event)
            delivered.set()

        watcher = DeployWatcher(config, on_event, debounce=debounce)
        watcher.start()
        try:
            await changes(events, delivered)
        finally:
            watcher.stop()

    asyncio.run(main())
    return events


def test_a_new_migration_script_is_one_migration_event(tmp_path: Path) -> None:
    config = service(tmp_path)
    events = watch(config, [("alembic/versions/abc123_add_column.py", MIGRATION.encode())])
    assert [event.kind for event in events] == ["migration"]
    assert events[0].paths == (str(config.workdir / "alembic/versions/abc123_add_column.py"),)
    assert events[0].service == "vbrpg" and events[0].at <= time.time()


def test_a_burst_of_changes_is_one_event(tmp_path: Path) -> None:
    config = service(tmp_path)
    changes = [(f"src/module_{index}.py", b"x = 1\n") for index in range(20)]
    changes.append(("alembic/versions/def456_more.py", MIGRATION.encode()))
    events = watch(config, changes, debounce=0.5)
    assert len(events) == 1
    assert events[0].kind == "migration"  # a migration anywhere in the burst makes it a migration event
    assert len(events[0].paths) == 21


def test_bytecode_editor_files_data_and_backups_are_ignored(tmp_path: Path) -> None:
    config = service(tmp_path)
    database = config.database
    with closing(sqlite3.connect(database)) as connection:  # the service writing its database
        connection.execute("CREATE TABLE t (x)")
        connection.commit()
    noise = [
        ("alembic/versions/__pycache__/abc123_add_column.cpython-311.pyc", b"\0"),
        ("alembic/versions/.abc123_add_column.py.swp", b"\0"),
        ("alembic/versions/abc123_add_column.py~", b"\0"),
        ("src/.#module.py", b"\0"),
        ("data/backups/vbrpg_backup_20250101_000000.db", b"\0"),
        ("data/backups/vbrpg_backup_20250101_000000.db.json", b"{}"),
        ("data/vbrpg_corrupted_20250101_000000.db", b"\0"),
        ("logs/service.log", b"started\n"),
        (".git/index", b"\0"),
    ]
    events = watch(config, [*noise, ("src/app.py", b"print('deployed')\n")])
    assert [(event.kind, event.paths) for event in events] == [("code", (str(config.workdir / "src/app.py"),))]


def test_litestream_state_and_a_file_replica_inside_the_code_dir_are_not_deploys(tmp_path: Path) -> None:
    # Litestream writes LTX files every sync_interval: beside the database and into a file replica.
    config = service(tmp_path, 'replication = { replicas = [{ type = "file", path = "offsite" }] }')
    noise = [
        ("data/.vbrpg.db-litestream/ltx/0/0000000000000007-0000000000000007.ltx", b"\0"),
        ("offsite/ltx/0/0000000000000007-0000000000000007.ltx", b"\0"),
        ("offsite/ltx/9/snapshot-marker", b"\0"),
    ]
    events = watch(config, [*noise, ("src/app.py", b"print('deployed')\n")])
    assert [(event.kind, event.paths) for event in events] == [("code", (str(config.workdir / "src/app.py"),))]


def test_files_moved_in_from_outside_are_a_deploy_and_reading_files_is_not(tmp_path: Path) -> None:
    """The observer is told to report changes only (no opens, no read-only closes): a script renamed into the
    versions dir and a directory of code moved into the code dir (a release swapped in by rename) still arrive,
    and the daemon's own reads in the tree (the schema probe reading scripts) stay silent."""
    config = service(tmp_path)
    incoming = tmp_path / "incoming"
    (incoming / "package").mkdir(parents=True)
    (incoming / "abc123_add_column.py").write_text(MIGRATION)
    (incoming / "package" / "module.py").write_text("x = 1\n")
    (config.workdir / "src" / "existing.py").write_text("y = 2\n")

    async def changes(events: list[DeployEvent], delivered: asyncio.Event) -> None:
        for _ in range(5):
            (config.workdir / "src" / "existing.py").read_text()
        await asyncio.sleep(1.0)
        assert events == []  # reads are not changes
        (incoming / "abc123_add_column.py").rename(config.versions_dir / "abc123_add_column.py")
        (incoming / "package").rename(config.workdir / "src" / "package")
        await asyncio.wait_for(delivered.wait(), 30)
        await asyncio.sleep(1.0)

    events = watching(config, changes, debounce=0.3)
    paths = {path for event in events for path in event.paths}
    assert str(config.versions_dir / "abc123_add_column.py") in paths
    assert str(config.workdir / "src" / "package" / "module.py") in paths
    assert "migration" in {event.kind for event in events}


def test_services_sharing_a_code_dir_share_one_watch_and_each_gets_its_events(tmp_path: Path) -> None:
    """Two services on one code dir, one SharedObserver: one inotify watch (one emitter) reads the changes once
    and both watchers get the deploy; once one stops, the other still does; the watch goes with the last."""
    first = service(tmp_path)
    second = replace(first, name="second")
    observers: list[BaseObserver] = []

    def factory() -> BaseObserver:
        observers.append(Observer())
        return observers[-1]

    shared = SharedObserver(factory)
    events: dict[str, list[DeployEvent]] = {"vbrpg": [], "second": []}

    async def main() -> None:
        arrived = asyncio.Event()

        def on_event(event: DeployEvent) -> None:
            events[event.service].append(event)
            if events["vbrpg"] and events["second"]:
                arrived.set()

        watchers = [DeployWatcher(config, on_event, debounce=0.2, shared=shared) for config in (first, second)]
        for watcher in watchers:
            watcher.start()
        try:
            [observer] = observers
            assert len(observer.emitters) == 1  # one watch of the code dir for both services
            (first.versions_dir / "abc123_add_column.py").write_text(MIGRATION)
            await asyncio.wait_for(arrived.wait(), 30)
            watchers[0].stop()
            events["second"].clear()
            arrived.clear()
            (first.workdir / "src" / "module.py").write_text("x = 1\n")
            await asyncio.wait_for(arrived.wait(), 30)
            await asyncio.sleep(0.6)  # the stopped watcher's event, were it still delivered, would be in by now
            assert [event.kind for event in events["vbrpg"]] == ["migration"]  # the stopped one heard nothing more
            assert [event.kind for event in events["second"]] == ["code"]
            watchers[1].stop()
            assert not observer.emitters  # the watch went with its last handler
        finally:
            for watcher in watchers:
                watcher.stop()
            shared.stop()

    asyncio.run(main())


def test_a_file_held_open_and_written_is_heard_when_its_writer_closes_it(tmp_path: Path) -> None:
    """The observer's mask has no IN_MODIFY: the writes of a file kept open (the service's log, its database)
    never reach the observer's threads; a deploy's file arrives when its writer closes it."""
    config = service(tmp_path)

    async def changes(events: list[DeployEvent], delivered: asyncio.Event) -> None:
        with (config.workdir / "src" / "app.py").open("w") as handle:
            await asyncio.sleep(0.5)
            events.clear()  # the file's creation: heard at once
            delivered.clear()
            for line in range(20):
                handle.write(f"x = {line}\n")
                handle.flush()
            await asyncio.sleep(1.0)
            assert events == []  # written, still open: nothing yet
        await asyncio.wait_for(delivered.wait(), 30)

    events = watching(config, changes, debounce=0.2)
    assert [(event.kind, event.paths) for event in events] == [("code", (str(config.workdir / "src/app.py"),))]
