"""The service manager's end of sd_notify: a real AF_UNIX datagram socket, as systemd binds for a Type=notify
unit, and a thread that keeps every datagram in arrival order.

The socket's receive queue is FIFO, so the order of the recorded datagrams is the order they were sent in; tests
reason about that order (READY=1 after ..., nothing between two markers), not about when they arrived.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Datagram:
    payload: str
    received_at: float  # time.time() when read: comparable with the daemon's Unix-time metrics

    @property
    def assignments(self) -> dict[str, str]:
        """``READY=1\\nSTATUS=x`` as {"READY": "1", "STATUS": "x"}."""
        return dict(line.split("=", 1) for line in self.payload.splitlines() if "=" in line)

    def says(self, key: str, value: str | None = None) -> bool:
        assignments = self.assignments
        return key in assignments and (value is None or assignments[key] == value)


class NotifyListener:
    """Bound to a path (``kind="path"``) or an abstract name (``kind="abstract"``); ``address`` is the value
    NOTIFY_SOCKET takes. ``on_datagram`` runs on the receiving thread before the datagram is recorded, so it sees
    the sender's world as it was when that datagram was read."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        if kind == "path":
            path = folder / "notify.sock"
            self.socket.bind(str(path))
            self.address = str(path)
        elif kind == "abstract":
            name = f"rollbackd-test-{os.getpid()}-{uuid.uuid4().hex}"
            self.socket.bind("\0" + name)
            self.address = "@" + name
        else:
            raise ValueError(f"unknown socket kind {kind!r}")
        self.on_datagram: Callable[[Datagram], None] | None = None
        self.callback_errors: list[BaseException] = []
        self._datagrams: list[Datagram] = []
        self._changed = threading.Condition()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._thread = threading.Thread(target=self._receive, name="notify-listener", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            readable, _, _ = select.select([self.socket, self._wake_reader], [], [])
            if self._wake_reader in readable:
                return
            datagram = Datagram(self.socket.recv(65536).decode(), time.time())
            if self.on_datagram is not None:
                try:
                    self.on_datagram(datagram)
                except Exception as error:  # noqa: BLE001 - reported by the test, never kills the listener
                    self.callback_errors.append(error)
            with self._changed:
                self._datagrams.append(datagram)
                self._changed.notify_all()

    @property
    def datagrams(self) -> list[Datagram]:
        with self._changed:
            return list(self._datagrams)

    def payloads(self) -> list[str]:
        return [datagram.payload for datagram in self.datagrams]

    def wait_for(self, check: Callable[[list[Datagram]], T | None], what: str, timeout: float = 60.0) -> T:
        """Wait (on a condition, no polling) until ``check(datagrams)`` returns something truthy; return it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = check(list(self._datagrams))
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = [datagram.payload for datagram in self._datagrams[-15:]]
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last datagrams: {tail}")
                self._changed.wait(remaining)

    def wait_index(self, key: str, value: str | None = None, *, start: int = 0, timeout: float = 60.0) -> int:
        """Wait for the first datagram from index ``start`` on that assigns ``key`` (= ``value``); its index."""
        what = f"{key}={value}" if value is not None else key
        found = self.wait_for(
            lambda seen: (index,) if (index := first_index(seen, key, value, start)) is not None else None,
            f"{what} (from datagram {start} on)",
            timeout,
        )
        return found[0]

    def send_marker(self, text: str) -> None:
        """Queue a datagram of the test's own among the daemon's (from any thread), to cut the stream in parts."""
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(f"X_TEST_MARKER={text}".encode(), address)

    def close(self) -> None:
        self._wake_writer.send(b"x")
        self._thread.join(timeout=10)
        for sock in (self.socket, self._wake_reader, self._wake_writer):
            sock.close()


def first_index(datagrams: Sequence[Datagram], key: str, value: str | None = None, start: int = 0) -> int | None:
    """The index of the first datagram from ``start`` on that assigns ``key`` (= ``value``), or None."""
    for index in range(start, len(datagrams)):
        if datagrams[index].says(key, value):
            return index
    return None
