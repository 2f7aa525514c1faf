"""Holding the daemon's Litestream child paused from another process, for as long as that process's connection.

A `rollbackd restore` run by hand swaps the database file; the daemon's child must not replicate across a swap
it did not see (its position in the old file's WAL would be read against the new file's). So the CLI asks, over
the status socket, ``{"request": "replication-pause", "service": NAME}``: the daemon stops the child and answers
once it has exited, then keeps the pause for as long as the connection stays open. ``replication-resume`` on the
same connection ends it (the answer comes once the child was started again, or failed to start); so does the
connection closing, which the kernel does when the CLI dies: a pause can never outlive its holder. A holder that
went away without a resume may have died mid-swap, so the daemon first finishes or undoes the restore it left
(``settle``) and only then lets the child start.

When the child starts again, Litestream 0.5 compares its last LTX file (kept in the database's meta dir) with the
WAL it finds: the restored file's WAL has new salts, so it takes a full snapshot as its next transaction, and the
replica's newest state is the restored file; what it held before stays in the replica for a point in time before
the swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollbackd.config.model import ServiceConfig
from rollbackd.replication.pause import NoPause, ReplicationControlError, ReplicationPause
from rollbackd.replication.supervisor import LitestreamSupervisor, UnitReplication
from rollbackd.runtime.status_client import StatusSocketError, connect, send_request

log = logging.getLogger(__name__)

PAUSE_REQUEST = "replication-pause"
RESUME_REQUEST = "replication-resume"
# The child's stop (SIGTERM, its last sync, SIGKILL after STOP_TIMEOUT) and its start again fit well inside this.
ANSWER_TIMEOUT = 120.0
MAX_ANSWER_BYTES = 65536


@dataclass(frozen=True)
class Holdable:
    """A service's Litestream child, and what to do before it resumes when its holder vanished."""

    replication: LitestreamSupervisor
    settle: Callable[[], Awaitable[None]]  # finish or undo a restore its owner left half done


class ReplicationHolds:
    """The daemon's handler of ``replication-pause`` requests on the status socket."""

    def __init__(self, lookup: Callable[[str], Holdable | None]) -> None:
        self.lookup = lookup

    async def __call__(
        self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        name = str(request.get("service", ""))
        target = self.lookup(name)
        if target is None:  # no child runs for it here: nothing replicates the file
            await _send(writer, {"ok": True, "state": "none", "service": name})
            return
        holder = _peer(writer)
        supervisor = target.replication
        await supervisor.pause_async()  # a cancel from here on is the daemon stopping: its children are ended
        log.info("%s: replication paused for %s", name, holder, extra={"service": name})
        try:
            await _send(writer, {"ok": True, "state": supervisor.state.value, "service": name})
            asked = await _wait_for_resume(reader)
        except ConnectionError:
            asked = False
        if not asked:
            log.warning(
                "%s: %s went away holding replication paused: settling its restore before resuming",
                name,
                holder,
                extra={"service": name},
            )
            await target.settle()
        await supervisor.resume_async()
        if asked:
            with contextlib.suppress(ConnectionError):
                await _send(writer, {"ok": True, "state": supervisor.state.value, "last_error": supervisor.last_error})


async def _wait_for_resume(reader: asyncio.StreamReader) -> bool:
    """True once the holder asks for the resume; False when its connection closes (or says anything else)."""
    try:
        line = await reader.readline()
    except (ConnectionError, ValueError):
        return False
    try:
        request = json.loads(line) if line.strip() else {}
    except ValueError:
        return False
    return isinstance(request, dict) and request.get("request") == RESUME_REQUEST


async def _send(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
    writer.write(json.dumps(answer, default=str).encode() + b"\n")
    await writer.drain()


def _peer(writer: asyncio.StreamWriter) -> str:
    """Who holds the pause, for the log: the connecting process's pid (SO_PEERCRED), when the kernel says."""
    raw = writer.get_extra_info("socket")
    try:
        credentials = raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, _uid, _gid = struct.unpack("3i", credentials)
    except (AttributeError, OSError):
        return "a client of the status socket"
    return f"pid {pid}"


class DaemonReplicationPause:
    """The CLI's side (a ReplicationPause): the running daemon's child for ``service`` paused from ``pause()`` to
    ``resume()``; when no daemon answers, no child runs against the database and there is nothing to pause."""

    def __init__(self, socket_path: Path, service: str, *, timeout: float = ANSWER_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.service = service
        self.timeout = timeout
        self._connection: socket.socket | None = None

    def pause(self) -> None:
        """Return once the daemon's child has stopped. Raise ReplicationControlError when a daemon answers but
        does not pause it (then nothing may be swapped)."""
        try:
            client = connect(self.socket_path, self.timeout)
        except StatusSocketError:
            return  # no daemon: nothing replicates
        try:
            send_request(client, {"request": PAUSE_REQUEST, "service": self.service})
            answer = _read_answer(client)
        except (StatusSocketError, OSError) as error:
            client.close()
            raise ReplicationControlError(
                f"{self.service}: the daemon did not pause its Litestream child: {error}"
            ) from error
        if answer.get("ok") is not True or "state" not in answer:
            client.close()
            raise ReplicationControlError(
                f"{self.service}: the daemon did not pause its Litestream child "
                f"({answer.get('error') or 'it does not know the replication-pause request: restart rollbackd'})"
            )
        if answer["state"] == "none":
            client.close()  # the daemon runs no child for this service
            return
        self._connection = client

    def resume(self) -> None:
        """Let the daemon start its child again; a daemon gone meanwhile took its child with it (a new daemon
        starts a new one), so that is a warning, never a failure of the restore."""
        client, self._connection = self._connection, None
        if client is None:
            return
        with client:
            try:
                send_request(client, {"request": RESUME_REQUEST})
                answer = _read_answer(client)
            except (StatusSocketError, OSError) as error:
                log.warning("%s: the daemon did not confirm that replication resumed: %s", self.service, error)
                return
        if answer.get("last_error") and answer.get("state") != "running":
            log.warning(
                "%s: replication resumed, but Litestream is %s: %s",
                self.service,
                answer.get("state"),
                answer["last_error"],
            )


def pause_for_swap(socket_path: Path, service: ServiceConfig) -> ReplicationPause:
    """What a command that swaps ``service``'s database by hand (`restore`, `rollback`, a failed `migrate`'s
    restore) must pause: the operator's unit (managed = false) is stopped and started around the swap; the running
    daemon's own child is held paused over ``socket_path`` for as long as this process's connection (it resumes by
    itself if this process dies); with no replication configured, nothing."""
    replication = service.replication
    if replication is None:
        return NoPause()
    if not replication.managed:
        return UnitReplication(service)
    return DaemonReplicationPause(socket_path, service.name)


def _read_answer(client: socket.socket) -> dict[str, Any]:
    """One JSON line from the daemon. Raise StatusSocketError."""
    received = b""
    while not received.endswith(b"\n"):
        try:
            chunk = client.recv(4096)
        except OSError as error:
            raise StatusSocketError(f"no answer from the daemon: {error.strerror or error}") from error
        if not chunk:
            raise StatusSocketError("the daemon closed the connection without an answer")
        received += chunk
        if len(received) > MAX_ANSWER_BYTES:
            raise StatusSocketError("the daemon's answer is too large")
    try:
        answer = json.loads(received)
    except ValueError as error:
        raise StatusSocketError(f"the daemon's answer is not JSON: {error}") from error
    if not isinstance(answer, dict):
        raise StatusSocketError("the daemon's answer is not a JSON object")
    return answer
