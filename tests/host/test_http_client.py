"""The daemon's HTTP client against real servers on 127.0.0.1: the example service under uvicorn for what the
daemon sends it, and a tiny asyncio server of the test's own where the test needs to count connections or make
the server misbehave (close an idle connection, never answer, chunk, close after its answer)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator

import pytest

from rollbackd.host.http_client import HttpClient, HttpConnectError, HttpTimeout, HttpTransportError
from tests.probes.example_app import VbrpgApp, serving
from tests.support.vbrpg_service import free_port

# Given the index of a request on its connection and its head, the bytes to answer (None: close unanswered).
Answer = Callable[[int, bytes], bytes | None]


def keep_alive(body: bytes = b"ok") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class TinyServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers as ``answer`` says and counts the connections it accepted."""

    def __init__(self, answer: Answer, *, close_after: int = 1000) -> None:
        self.answer = answer
        self.close_after = close_after  # requests served on a connection before the server closes it, unannounced
        self.connections = 0
        self.closed = asyncio.Event()  # set each time a connection of this server has been closed by it
        self.heads: list[bytes] = []
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> TinyServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for index in range(self.close_after):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                self.heads.append(head)
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                reply = self.answer(index, head)
                if reply is None:
                    return
                if not reply:
                    await reader.read()  # never answers: waits until the client gives up and closes
                    return
                writer.write(reply)
                await writer.drain()
                if b"connection: close" in reply.lower():
                    return
        finally:
            writer.close()
            self.closed.set()


@pytest.fixture(scope="module")
def example_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VbrpgApp]:
    app = VbrpgApp(tmp_path_factory.mktemp("http-client")).create(rooms=1)
    with serving(app) as served:
        yield served


def test_json_requests_to_the_example_service(example_service: VbrpgApp) -> None:
    async def scenario() -> None:
        async with HttpClient() as client:
            created = await client.post(
                f"{example_service.base_url}/api/rooms", json={"name": "h11 room", "host_name": "h11-host"}, timeout=10
            )
            assert created.status == 201, created.text
            code = created.json()["code"]
            room = await client.get(f"{example_service.base_url}/api/rooms/{code}", timeout=10)
            assert (room.status, room.json()["name"]) == (200, "h11 room")
            assert "json" in room.header("Content-Type")
            gone = await client.request("DELETE", f"{example_service.base_url}/api/rooms/{code}", timeout=10)
            assert gone.status == 200 and gone.json()["code"] == code
            missing = await client.get(f"{example_service.base_url}/api/rooms/{code}", timeout=10)
            assert missing.status == 404

    asyncio.run(scenario())


def test_keep_alive_sends_several_requests_over_one_connection() -> None:
    async def scenario() -> None:
        async with TinyServer(lambda index, head: keep_alive(b"answer %d" % index)) as server:
            async with HttpClient() as client:
                bodies = [(await client.get(server.url + "/x", timeout=10)).body for _ in range(5)]
            assert bodies == [b"answer %d" % index for index in range(5)]
            assert server.connections == 1
            await asyncio.wait_for(server.closed.wait(), 10)  # aclose() closed it

    asyncio.run(scenario())


def test_the_request_says_what_it_is_and_asks_for_no_compression() -> None:
    async def scenario() -> None:
        async with TinyServer(lambda index, head: keep_alive()) as server, HttpClient() as client:
            await client.post(server.url + "/hook?token=a%20b c", json={"text": "é"}, timeout=10)
        head = server.heads[0].decode("latin-1").lower()
        assert head.startswith("post /hook?token=a%20b%20c http/1.1\r\n")
        assert f"host: {server.url.removeprefix('http://')}\r\n" in head
        assert "content-type: application/json" in head and "content-length: 13" in head  # {"text":"é"} in UTF-8
        assert "accept-encoding" not in head

    asyncio.run(scenario())


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def scenario() -> None:
        async with TinyServer(lambda index, head: keep_alive(), close_after=1) as server:
            async with HttpClient() as client:
                await client.get(server.url + "/", timeout=10)
                await server.closed.wait()  # the server closed its end after one answer, without saying so
                await asyncio.sleep(0.05)  # for the FIN to reach the client's loop
                response = await client.post(server.url + "/", json={}, timeout=10)  # POST: no retry to hide it
            assert response.status == 200 and server.connections == 2

    asyncio.run(scenario())


def test_a_reused_connection_that_breaks_unanswered_is_retried_only_for_idempotent_methods() -> None:
    async def scenario() -> None:
        # The server takes a second request on the connection, then closes it unanswered (its idle timeout raced
        # the request): a GET goes again on a fresh connection, a POST is not sent twice.
        async with TinyServer(lambda index, head: keep_alive() if index == 0 else None) as server:
            async with HttpClient() as client:
                await client.get(server.url + "/", timeout=10)
                assert (await client.get(server.url + "/", timeout=10)).status == 200
                assert server.connections == 2
                with pytest.raises(HttpTransportError):
                    await client.post(server.url + "/", json={}, timeout=10)
            assert server.connections == 2

    asyncio.run(scenario())


def test_a_server_that_never_answers_times_out() -> None:
    async def scenario() -> None:
        async with TinyServer(lambda index, head: b"") as server, HttpClient() as client:
            with pytest.raises(HttpTimeout, match="within 0.3 s"):
                await client.get(server.url + "/", timeout=0.3)
            await asyncio.wait_for(server.closed.wait(), 10)  # the client closed the abandoned connection

    asyncio.run(scenario())


def test_a_closed_port_is_a_refused_connection() -> None:
    async def scenario() -> None:
        async with HttpClient() as client:
            with pytest.raises(HttpConnectError) as raised:
                await client.get(f"http://127.0.0.1:{free_port()}/health", timeout=5)
        assert raised.value.refused

    asyncio.run(scenario())


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


def test_a_chunked_answer_is_read_whole_and_a_long_one_is_cut_at_the_cap() -> None:
    async def scenario() -> None:
        async with TinyServer(lambda index, head: CHUNKED) as server, HttpClient() as client:
            whole = await client.get(server.url + "/", timeout=10)
            assert (whole.body, whole.truncated) == (b"hello world", False)
            cut = await client.get(server.url + "/", timeout=10, max_body=7)
            assert (cut.body, cut.truncated) == (b"hello w", True)
            assert (await client.get(server.url + "/", timeout=10)).body == b"hello world"
            assert server.connections == 2  # the cut answer's connection, with its rest unread, was closed

    asyncio.run(scenario())


def test_an_answer_with_connection_close_closes_its_connection() -> None:
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    async def scenario() -> None:
        async with TinyServer(lambda index, head: closing) as server, HttpClient() as client:
            for _ in range(3):
                assert (await client.get(server.url + "/", timeout=10)).text == "ok"
            assert server.connections == 3

    asyncio.run(scenario())


def test_a_closed_client_sends_nothing() -> None:
    async def scenario() -> None:
        client = HttpClient()
        await client.aclose()
        with pytest.raises(HttpTransportError, match="closed"):
            await client.get(f"http://127.0.0.1:{free_port()}/", timeout=5)

    asyncio.run(scenario())
