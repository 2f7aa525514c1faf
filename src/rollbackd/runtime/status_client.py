"""The CLI's side of the status socket (runtime/status_socket.py): a blocking client on the ``socket`` module.

`rollbackd status` and the commands that hold the daemon's replication paused talk to the daemon here, so they do
not load asyncio (and with it ssl, ~50 ms of a `rollbackd status`) for one request line and one answer.

The protocol: the client sends one JSON line naming its request (``{"request": "status"}``); the daemon answers
with one JSON document.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

MAX_STATUS_BYTES = 8 * 1024 * 1024
STATUS_REQUEST = {"request": "status"}


class StatusSocketError(Exception):
    """No daemon answers on the socket (not running, or the socket is not ours to open)."""


def connect(path: Path, timeout: float) -> socket.socket:
    """A connection to the daemon on ``path``. Raise StatusSocketError when nobody answers."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        client.connect(str(path))
    except FileNotFoundError:
        client.close()
        raise StatusSocketError(f"no daemon socket at {path}: is `rollbackd run` running?") from None
    except (ConnectionRefusedError, PermissionError, OSError) as error:
        client.close()
        raise StatusSocketError(f"cannot reach the daemon at {path}: {error.strerror or error}") from error
    return client


def send_request(client: socket.socket, request: dict[str, Any]) -> None:
    """Send one request line. Raise StatusSocketError when the daemon is gone."""
    try:
        client.sendall(json.dumps(request).encode() + b"\n")
    except OSError as error:
        raise StatusSocketError(f"the daemon closed the connection: {error.strerror or error}") from error


def query_status(path: Path, timeout: float = 10.0) -> dict[str, Any]:
    """Ask the daemon on ``path`` for its status. Raise StatusSocketError when nobody answers."""
    with connect(path, timeout) as client:
        send_request(client, STATUS_REQUEST)
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
