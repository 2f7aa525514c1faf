"""The running daemon's status, over a Unix socket that only its owner can open (0600, never a TCP port).

`rollbackd status` connects, reads one JSON document and closes; the daemon answers from memory (last
observation of each probe, policy state, backups) plus the state DB (deploy window, incidents).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

StatusProvider = Callable[[], Awaitable[dict[str, Any]]]
MAX_STATUS_BYTES = 8 * 1024 * 1024


class StatusSocketError(Exception):
    """No daemon answers on the socket (not running, or the socket is not ours to open)."""


class StatusServer:
    def __init__(self, path: Path, provider: StatusProvider) -> None:
        self.path = path
        self.provider = provider
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        """Bind the socket and make it 0600 before it accepts, replacing a stale one. Raise OSError.

        Not through the umask: that is process-wide, and a probe's thread creating a folder meanwhile would get
        it without its x bits (seen under systemd: a vault dir 0600 that nothing could write into). Between the
        bind and the chmod the socket is reachable only through its folder, which is the 0700 state dir.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.path.exists() or self.path.is_symlink():
            if _answers(self.path):
                raise OSError(f"another rollbackd already answers on {self.path}")
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            os.chmod(self.path, 0o600)
        except OSError:
            listener.close()
            raise
        self._server = await asyncio.start_unix_server(self._answer, sock=listener)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status = await self.provider()
            writer.write(json.dumps(status, default=str).encode() + b"\n")
            await writer.drain()
        except Exception:
            log.exception("status request failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def query_status(path: Path, timeout: float = 10.0) -> dict[str, Any]:
    """Ask the daemon on ``path`` for its status. Raise StatusSocketError when nobody answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        try:
            client.connect(str(path))
        except FileNotFoundError:
            raise StatusSocketError(f"no daemon socket at {path}: is `rollbackd run` running?") from None
        except (ConnectionRefusedError, PermissionError, OSError) as error:
            raise StatusSocketError(f"cannot reach the daemon at {path}: {error.strerror or error}") from error
        chunks = []
        received = 0
        while True:
            chunk = client.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            if received > MAX_STATUS_BYTES:
                raise StatusSocketError("the daemon's status answer is too large")
    try:
        data = json.loads(b"".join(chunks))
    except ValueError as error:
        raise StatusSocketError(f"the daemon's status answer is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise StatusSocketError("the daemon's status answer is not a JSON object")
    return data


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
