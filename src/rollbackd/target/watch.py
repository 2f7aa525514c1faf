"""Seeing a deploy arrive: a watchdog observer on the Alembic versions dir and the code dir.

A new migration script in ``versions/`` means ``alembic upgrade`` is about to run: the backup scheduler takes a
pre-deploy backup at once, before the revision changes. Changes elsewhere in the code dir are a deploy without a
migration (the policy opens its deploy window). Observer threads only hand paths to the event loop
(``loop.call_soon_threadsafe``); debouncing and classification happen on the loop, so a ``git checkout`` of a
hundred files is one event. Byte-code, editor temp files, VCS internals, logs, the database and its sidecars, the
backup dir and the state dir are ignored: the service's own writes must not look like deploys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from rollbackd.config.model import FileReplica, ServiceConfig

log = logging.getLogger(__name__)

EventKind = Literal["migration", "code"]
CHANGE_EVENTS = (EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED, EVENT_TYPE_DELETED, EVENT_TYPE_CLOSED)
# The observer's event filter (its inotify mask): without it the kernel reports every open and every read-only
# close in the tree too, the daemon's own probes opening the database and reading the versions dir included, each
# parsed on the observer's threads only to be dropped (50 services sharing one code dir: the observers' share of
# the daemon's Python time fell from 18 % to 5 %). A moved-in directory's files still arrive. No IN_MODIFY (nor
# IN_ATTRIB): every write(2) of a file held open sends one, the service's log line per request and its database
# writes included, while a deploy's file is reported when its writer closes it (IN_CLOSE_WRITE), created,
# renamed in or deleted; a chmod or a bare mtime change is no deploy (bench/watch_events.py: the example
# service's log alone was ~1.8 events a second at every probe 1 s).
CHANGE_EVENT_CLASSES: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileClosedEvent,
]
IGNORED_PARTS = ("__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".ruff_cache", "node_modules")
LITESTREAM_DIR_SUFFIX = "-litestream"  # Litestream's own state beside the database (.vbrpg.db-litestream/)
IGNORED_SUFFIXES = (
    ".pyc",
    ".pyo",
    ".swp",
    ".swo",
    ".swx",
    ".tmp",
    ".log",
    ".partial",
    ".pid",
    ".lock",
    ".sock",
    "~",
    ".ltx",
)
SQLITE_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal", ".sqlite", ".sqlite3", "-wal", "-shm", "-journal")


@dataclass(frozen=True)
class DeployEvent:
    """A debounced burst of changes: ``migration`` when any script in the versions dir changed."""

    service: str
    kind: EventKind
    paths: tuple[str, ...]
    at: float


def is_ignored(path: Path, ignored_dirs: Collection[Path]) -> bool:
    """True for files whose changes say nothing about a deploy (build output, editors, data, logs)."""
    name = path.name
    if any(part in IGNORED_PARTS or part.endswith(LITESTREAM_DIR_SUFFIX) for part in path.parts):
        return True
    if name.endswith(IGNORED_SUFFIXES) or name.endswith(SQLITE_SUFFIXES):
        return True
    if name.startswith((".#", "#")) or name == "4913":  # emacs lock files, vim's write test
        return True
    return any(path == folder or path.is_relative_to(folder) for folder in ignored_dirs)


class _Forwarder(FileSystemEventHandler):
    """Runs on the observer thread: passes paths to the loop and nothing else."""

    def __init__(self, deliver: Callable[[str], None]) -> None:
        self.deliver = deliver

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in CHANGE_EVENTS or event.is_directory:
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                self.deliver(path if isinstance(path, str) else path.decode())


class SharedObserver:
    """One watchdog observer for every service's DeployWatcher: one inotify reader, one dispatch thread, and one
    watch per watched tree, however many services watch it. Each service with an observer of its own read and
    parsed every change on three threads of its own; 50 services on one code dir did that 50 times over (the
    watchdog threads used two thirds of the daemon's CPU there, the example service's log and WAL changing
    ~40 times a second). Started at the
    first watch; a tree's watch is removed with its last handler."""

    def __init__(self, observer_factory: Callable[[], BaseObserver] = Observer) -> None:
        self._factory = observer_factory
        self._observer: BaseObserver | None = None
        self._handlers: dict[ObservedWatch, int] = {}
        self._lock = threading.Lock()

    def watch(self, handler: FileSystemEventHandler, root: Path) -> ObservedWatch:
        """Deliver the changes under ``root`` (recursively) to ``handler`` too."""
        with self._lock:
            if self._observer is None:
                self._observer = self._factory()
                self._observer.daemon = True
                self._observer.start()
            watch = self._observer.schedule(handler, str(root), recursive=True, event_filter=CHANGE_EVENT_CLASSES)
            self._handlers[watch] = self._handlers.get(watch, 0) + 1
            return watch

    def unwatch(self, handler: FileSystemEventHandler, watch: ObservedWatch) -> None:
        """Stop delivering to ``handler``; the tree's watch goes with its last handler."""
        with self._lock:
            if self._observer is None or watch not in self._handlers:
                return
            self._handlers[watch] -= 1
            if self._handlers[watch]:
                self._observer.remove_handler_for_watch(handler, watch)
            else:
                del self._handlers[watch]
                self._observer.unschedule(watch)

    def stop(self) -> None:
        with self._lock:
            observer, self._observer = self._observer, None
            self._handlers.clear()
        if observer is not None:
            observer.stop()
            observer.join(timeout=10)


class DeployWatcher:
    """Watch one service's versions dir and code dir; call ``on_event`` on the event loop for each deploy burst.

    ``start`` is called from the loop's thread (or pass ``loop``). ``debounce``: quiet time that closes a burst;
    ``max_delay``: a burst is delivered at the latest this long after its first change even if changes go on.
    ``on_file(path, kind)`` runs on the observer thread for each relevant change, without waiting for the burst.
    ``shared``: the daemon's one observer for all services (else this watcher starts an observer of its own).
    """

    def __init__(
        self,
        service: ServiceConfig,
        on_event: Callable[[DeployEvent], None],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        debounce: float = 0.3,
        max_delay: float = 2.0,
        ignore: Collection[Path] = (),
        clock: Callable[[], float] = time.time,
        observer_factory: Callable[[], BaseObserver] = Observer,
        on_file: Callable[[Path, EventKind], None] | None = None,
        shared: SharedObserver | None = None,
    ) -> None:
        self.service = service
        self.on_event = on_event
        self.on_file = on_file
        self.loop = loop
        self.debounce = debounce
        self.max_delay = max_delay
        self.clock = clock
        self.versions_dir = service.versions_dir.resolve()
        self.code_dir = service.code_dir.resolve()
        replicas = [
            replica.path.resolve()
            for replica in (service.replication.replicas if service.replication is not None else ())
            if isinstance(replica, FileReplica)
        ]  # a file replica inside the code dir is written every sync: not a deploy
        self.ignored_dirs = (service.backups.dir.resolve(), *replicas, *(Path(path).resolve() for path in ignore))
        self._observer_factory = observer_factory
        self._observer: BaseObserver | None = None
        self._shared = shared
        self._handler: _Forwarder | None = None
        self._shared_watches: list[ObservedWatch] = []
        self._pending: dict[str, EventKind] = {}
        self._first_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.watched: tuple[Path, ...] = ()

    def start(self) -> None:
        """Start the observer thread. Missing dirs are skipped with a warning (nothing to watch there yet)."""
        self.loop = self.loop or asyncio.get_running_loop()
        roots: list[Path] = []
        for folder in (self.code_dir, self.versions_dir):
            if not folder.is_dir():
                log.warning("%s: not watching %s: it does not exist", self.service.name, folder)
            elif not any(folder == root or folder.is_relative_to(root) for root in roots):
                roots = [root for root in roots if not root.is_relative_to(folder)] + [folder]
        handler = _Forwarder(self._from_thread)
        self.watched = tuple(roots)
        if self._shared is not None:
            self._handler = handler
            self._shared_watches = [self._shared.watch(handler, root) for root in roots]
            return
        observer = self._observer_factory()
        for root in roots:
            observer.schedule(handler, str(root), recursive=True, event_filter=CHANGE_EVENT_CLASSES)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        """Stop the observer and drop a burst not yet delivered."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._shared is not None and self._handler is not None:
            for watch in self._shared_watches:
                self._shared.unwatch(self._handler, watch)
            self._shared_watches, self._handler = [], None
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None

    def _from_thread(self, path: str) -> None:
        """On the observer thread: drop noise here (pure path checks), so the service's own database writes
        never wake the event loop; hand the rest over."""
        if path.endswith(IGNORED_SUFFIXES + SQLITE_SUFFIXES):
            return  # is_ignored's own name test, before building a Path: most events here are the service's log and WAL
        kind = self.classify(Path(path))
        loop = self.loop
        if kind is None or loop is None or loop.is_closed():
            return
        if self.on_file is not None:
            # At once, before the debounce: a deploy runs `alembic upgrade` a moment after copying the script,
            # and a script that will be removed again (a code rollback) must reach the vault while it exists.
            try:
                self.on_file(Path(path), kind)
            except Exception:
                log.exception("%s: handling %s failed", self.service.name, path)
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(self._collect, path, kind)

    def classify(self, path: Path) -> EventKind | None:
        """``migration`` for a script in the versions dir, ``code`` for another code file, None if ignored.
        Pure path logic: safe on the observer thread."""
        path = Path(path)
        if is_ignored(path, self.ignored_dirs):
            return None
        if path.is_relative_to(self.versions_dir) and path.suffix == ".py":
            return "migration"
        if path.is_relative_to(self.code_dir) or path.is_relative_to(self.versions_dir):
            return "code"
        return None

    def _collect(self, raw: str, kind: EventKind) -> None:
        if self.loop is None:
            return
        now = self.loop.time()
        if not self._pending:
            self._first_at = now
        if self._pending.get(raw) != "migration":
            self._pending[raw] = kind
        if self._timer is not None:
            self._timer.cancel()
        delay = min(self.debounce, max(0.0, self._first_at + self.max_delay - now))
        self._timer = self.loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        pending, self._pending = self._pending, {}
        if not pending:
            return
        kind: EventKind = "migration" if "migration" in pending.values() else "code"
        event = DeployEvent(self.service.name, kind, tuple(sorted(pending)), self.clock())
        log.info("%s: deploy event (%s): %s", self.service.name, kind, ", ".join(event.paths[:5]))
        try:
            self.on_event(event)
        except Exception:
            log.exception("%s: deploy event handler failed", self.service.name)
