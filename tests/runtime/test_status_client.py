"""The CLI's blocking client of the status socket against the daemon's real server, and against what is not one:
no socket, a stale socket file, a listener that answers something other than a JSON object."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rollbackd.runtime.status_client import StatusSocketError, connect, query_status, send_request
from rollbackd.runtime.status_socket import StatusServer


def answers_of_the_real_server(socket_path: Path, asks: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Start the daemon's StatusServer on ``socket_path``, ask it from threads (None: the status query), stop it."""
    status = {"daemon": {"pid": 1}, "services": {"vbrpg": {"policy": {"state": "ok"}}}}

    async def echo(request: dict[str, Any], _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'{"echo": "' + str(request.get("service")).encode() + b'"}')

    def ask(request: dict[str, Any] | None) -> dict[str, Any]:
        if request is None:
            return query_status(socket_path)
        with connect(socket_path, 5.0) as client:
            send_request(client, request)
            return dict(json.loads(client.makefile("rb").read()))

    async def scenario() -> list[dict[str, Any]]:
        server = StatusServer(socket_path, lambda: asyncio.sleep(0, status), {"echo": echo})
        await server.start()
        try:
            return [await asyncio.to_thread(ask, request) for request in asks]
        finally:
            await server.close()

    return asyncio.run(scenario())


def test_the_client_reads_the_daemons_status_and_its_other_requests(tmp_path: Path) -> None:
    answers = answers_of_the_real_server(
        tmp_path / "state" / "rollbackd.sock", [None, {"request": "echo", "service": "x"}]
    )
    assert answers == [{"daemon": {"pid": 1}, "services": {"vbrpg": {"policy": {"state": "ok"}}}}, {"echo": "x"}]


def test_no_socket_says_to_start_the_daemon(tmp_path: Path) -> None:
    path = tmp_path / "rollbackd.sock"
    with pytest.raises(StatusSocketError) as raised:
        query_status(path)
    assert str(raised.value) == f"no daemon socket at {path}: is `rollbackd run` running?"


def test_a_stale_socket_file_cannot_be_reached(tmp_path: Path) -> None:
    path = tmp_path / "rollbackd.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # bound, never listening: as a daemon that was killed leaves it
    with pytest.raises(StatusSocketError) as raised:
        query_status(path)
    assert str(raised.value) == f"cannot reach the daemon at {path}: Connection refused"


@pytest.fixture
def one_answer(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A listener on a socket that reads the request line and answers the bytes put in the list, then closes."""
    path = tmp_path / "other.sock"
    answer: list[bytes] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.makefile("rb").readline()
            connection.sendall(answer[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, answer
    thread.join(timeout=10)
    listener.close()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"[1, 2]", "the daemon's status answer is not a JSON object"),
        (b"not json", "the daemon's status answer is not JSON: Expecting value: line 1 column 1 (char 0)"),
    ],
)
def test_an_answer_that_is_not_a_json_object_is_refused(
    one_answer: tuple[Path, list[bytes]], answer: bytes, message: str
) -> None:
    path, answers = one_answer
    answers.append(answer)
    with pytest.raises(StatusSocketError) as raised:
        query_status(path)
    assert str(raised.value) == message
