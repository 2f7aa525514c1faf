"""The running daemon's status, over a Unix socket that only its owner can open (0600, never a TCP port).

`rollbackd status` connects, reads one JSON document and closes; the daemon answers from memory (last
observation of each probe, policy state, backups) plus the state DB (deploy window, incidents). This is the
daemon's side; the CLI's is runtime/status_client.py, which loads no asyncio.

A client may first send one JSON line naming a request (``{"request": "status"}``; others are registered by the
daemon, e.g. ``replication-pause``, which keeps the connection for as long as it holds the pause). A client that
sends nothing gets the status after ``REQUEST_WAIT``, as before requests existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from rollbackd.host.private_dirs import make_private_dir
from rollbackd.runtime.status_client import STATUS_REQUEST

log = logging.getLogger(__name__)

StatusProvider = Callable[[], Awaitable[dict[str, Any]]]
# A request's handler: the request's JSON object, then the connection, which it answers on and may keep open.
RequestHandler = Callable[[dict[str, Any], asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MAX_REQUEST_BYTES = 4096
REQUEST_WAIT = 2.0  # seconds a client has to send its request line; then it gets the status
SOCKET_MODE = 0o600


class StatusServer:
    def __init__(
        self, path: Path, provider: StatusProvider, requests: Mapping[str, RequestHandler] | None = None
    ) -> None:
        self.path = path
        self.provider = provider
        self.requests = dict(requests or {})
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()  # cancelled at close: a held request must not outlive us

    async def start(self) -> None:
        """Bind the socket owner-only (0600) from the first instant, replacing a stale one. Raise OSError.

        Never through the process umask: it is process-wide, and probe threads creating directories meanwhile got
        it too (a vault dir of mode 0600). The socket is bound inside a fresh 0700 directory beside its final
        name, so nobody else can reach it while it gets its mode, then renamed into place."""
        make_private_dir(self.path.parent)
        if self.path.exists() or self.path.is_symlink():
            if _answers(self.path):
                raise OSError(f"another rollbackd already answers on {self.path}")
            self.path.unlink()
        private = Path(tempfile.mkdtemp(prefix=".s", dir=self.path.parent))  # 0700, short: sun_path is 108 bytes
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.chmod(private, 0o700)
            bound = private / "s"
            listener.bind(str(bound))
            os.chmod(bound, SOCKET_MODE)
            os.replace(bound, self.path)
            self._server = await asyncio.start_unix_server(self._answer, sock=listener)
        except BaseException:
            listener.close()
            raise
        finally:
            with contextlib.suppress(OSError):
                for leftover in private.iterdir():
                    leftover.unlink()
                private.rmdir()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            request = await _read_request(reader)
            name = request.get("request", "status")
            if name == "status":
                status = await self.provider()
                writer.write(json.dumps(status, default=str).encode() + b"\n")
            elif name in self.requests:
                await self.requests[name](request, reader, writer)
            else:
                writer.write(json.dumps({"ok": False, "error": f"unknown request {name!r}"}).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass  # the client went away; its request handler has already seen that
        except Exception:
            log.exception("status request failed")
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The client's request line; the status request when it sends none in time, or closes at once."""
    try:
        line = await asyncio.wait_for(reader.readline(), REQUEST_WAIT)
    except (TimeoutError, ValueError):  # ValueError: a line longer than the stream's limit
        return dict(STATUS_REQUEST)
    if not line.strip():
        return dict(STATUS_REQUEST)
    try:
        request = json.loads(line[:MAX_REQUEST_BYTES])
    except ValueError:
        return {"request": "?"}
    return request if isinstance(request, dict) else {"request": "?"}


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
