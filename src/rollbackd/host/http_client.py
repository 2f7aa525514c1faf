"""The daemon's HTTP/1.1 client: h11 for the protocol, a few keep-alive connections per origin around it.

The daemon only asks a service or a receiver for small answers (probes, smoke steps, webhooks): a GET with a
timeout and a body cap, a request with a JSON body. httpx did that at 1.4 ms of CPU per keep-alive GET and 4 to 8
MiB of RSS (httpx, httpcore, anyio, idna, sniffio); h11 (httpx's own HTTP/1.1 engine) over asyncio streams does it
at about a third of the CPU (bench/RESULTS.md, issue 13). No proxies from the environment, no redirects, no
cookies, no compression: a probe sees the answer of the URL it was given.
"""

from __future__ import annotations

import asyncio
import errno
import json
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import h11

from rollbackd import __version__
from rollbackd.host.http_url import HttpUrl, parse_url
from rollbackd.host.tls_context import LazyCertifiContext

# Methods a server must treat alike when sent twice: only these are sent again after a reused connection failed.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
MAX_IDLE_PER_ORIGIN = 8  # keep-alive connections kept open per (scheme, host, port)
READ_SIZE = 64 * 1024
CLOSE_WAIT = 1.0  # seconds aclose() waits for each connection (a TLS close_notify) before it aborts it
USER_AGENT = f"rollbackd/{__version__}"
_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([\w.:-]+)", re.IGNORECASE)


class HttpError(Exception):
    """The request got no complete answer; the subclass says why."""


class HttpTimeout(HttpError):
    """No complete answer within the request's timeout (connect included)."""


class HttpConnectError(HttpError):
    """No connection: ``refused`` when the port answered that nothing listens there."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class HttpTransportError(HttpError):
    """The connection broke during the exchange, or the answer was not HTTP/1.1."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]  # names lowercased, in the order received
    body: bytes
    truncated: bool = False  # the body was longer than the request's cap, which is all it holds

    def header(self, name: str) -> str:
        """The first value of header ``name`` (any case), '' when absent."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), "")

    @property
    def text(self) -> str:
        """The body decoded by the charset the response names (UTF-8 when it names none), errors replaced."""
        named = _CHARSET.search(self.header("content-type"))
        charset = named.group(1) if named else "utf-8"
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; raise ValueError when it is not."""
        return json.loads(self.body)


class _Unanswered(Exception):
    """The connection failed before any byte of an answer: an idempotent request may be sent again."""

    def __init__(self, error: HttpTransportError) -> None:
        super().__init__(str(error))
        self.error = error


class _Connection:
    """One TCP (or TLS) connection and its h11 state; it serves one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = h11.Connection(h11.CLIENT)

    @property
    def stale(self) -> bool:
        """True when the server closed it while it was idle."""
        return self.reader.at_eof() or self.writer.is_closing()

    @property
    def reusable(self) -> bool:
        return self.protocol.our_state is h11.DONE and self.protocol.their_state is h11.DONE

    def abort(self) -> None:
        self.writer.transport.abort()


class HttpClient:
    """Requests over a small pool of keep-alive connections per origin; ``aclose()`` closes them.

    ``ssl_context`` verifies https servers (default: certifi's bundle, read at the first https connection); a test
    passes one that trusts its own server."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context if ssl_context is not None else LazyCertifiContext()
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._closed = False

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def get(self, url: str, *, timeout: float, max_body: int | None = None) -> HttpResponse:
        return await self.request("GET", url, timeout=timeout, max_body=max_body)

    async def post(self, url: str, *, json: Any = None, timeout: float) -> HttpResponse:
        return await self.request("POST", url, json=json, timeout=timeout)

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float,
        max_body: int | None = None,
    ) -> HttpResponse:
        """Send ``method`` to ``url`` (``json``: the body, as JSON), and return the answer, its body cut at
        ``max_body`` bytes. ``timeout`` bounds all of it: connect, TLS, sending, the whole answer. Raise
        InvalidUrl (a ValueError) for a URL the client cannot send to, HttpError when there is no answer."""
        if self._closed:
            raise HttpTransportError("the HTTP client is closed")
        target = parse_url(url)
        body = b"" if json is None else _json_bytes(json)
        request = h11.Request(method=method, target=target.target, headers=_headers(target, method, body, headers))
        try:
            async with asyncio.timeout(timeout):
                return await self._send(target, request, body, max_body)
        except TimeoutError as error:
            raise HttpTimeout(f"no complete answer from {target.host_header} within {timeout:g} s") from error

    async def aclose(self) -> None:
        """Close every idle connection; one in use closes when its request ends."""
        self._closed = True
        idle = [connection for connections in self._idle.values() for connection in connections]
        self._idle.clear()
        for connection in idle:
            connection.writer.close()
        for connection in idle:
            try:
                async with asyncio.timeout(CLOSE_WAIT):
                    await connection.writer.wait_closed()
            except (TimeoutError, OSError):
                connection.abort()

    async def _send(self, url: HttpUrl, request: h11.Request, body: bytes, max_body: int | None) -> HttpResponse:
        reused = self._take_idle(url.origin)
        if reused is not None:
            try:
                return await self._exchange(reused, url, request, body, max_body)
            except _Unanswered as unanswered:
                if request.method.decode() not in IDEMPOTENT:
                    raise unanswered.error from unanswered.error.__cause__
        fresh = await self._connect(url)
        try:
            return await self._exchange(fresh, url, request, body, max_body)
        except _Unanswered as unanswered:
            raise unanswered.error from unanswered.error.__cause__

    def _take_idle(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin, [])
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to have timed out
            if not connection.stale:
                return connection
            connection.abort()
        return None

    def _release(self, connection: _Connection, origin: tuple[str, str, int]) -> None:
        idle = self._idle.setdefault(origin, [])
        if self._closed or not connection.reusable or len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.abort()
            return
        connection.protocol.start_next_cycle()
        idle.append(connection)

    async def _connect(self, url: HttpUrl) -> _Connection:
        context = self._ssl_context if url.scheme == "https" else None
        if isinstance(context, LazyCertifiContext) and not context.loaded:
            await asyncio.to_thread(context.load)  # certifi's bundle, parsed off the event loop
        try:
            reader, writer = await asyncio.open_connection(
                url.host, url.port, ssl=context, server_hostname=url.host if context else None, limit=READ_SIZE
            )
        except OSError as error:  # ssl.SSLError (a certificate not trusted) is one too: fail closed
            refused = isinstance(error, ConnectionRefusedError) or error.errno == errno.ECONNREFUSED
            refused = refused or "refused" in str(error).lower()  # every address of a name refused
            raise HttpConnectError(f"cannot connect to {url.host_header}: {error}", refused=refused) from error
        return _Connection(reader, writer)

    async def _exchange(
        self, connection: _Connection, url: HttpUrl, request: h11.Request, body: bytes, max_body: int | None
    ) -> HttpResponse:
        """Send ``request`` on ``connection`` and read its answer; the connection goes back to the pool only when
        the exchange completed and both sides keep it alive. Raise _Unanswered when nothing came back."""
        protocol = connection.protocol
        answered = False
        response: h11.Response | None = None
        received = bytearray()
        done = False
        try:
            data = protocol.send(request) or b""
            if body:
                data += protocol.send(h11.Data(data=body)) or b""
            data += protocol.send(h11.EndOfMessage()) or b""
            connection.writer.write(data)
            await connection.writer.drain()
            while True:
                event = protocol.next_event()
                if event is h11.NEED_DATA:
                    chunk = await connection.reader.read(READ_SIZE)
                    answered = answered or bool(chunk)
                    protocol.receive_data(chunk)
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    received += event.data
                    if max_body is not None and len(received) >= max_body:
                        break  # the rest stays unread: the connection closes below
                elif isinstance(event, h11.EndOfMessage):
                    done = True
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise h11.RemoteProtocolError("the server closed the connection before its answer ended")
        except (OSError, h11.ProtocolError) as error:
            problem = HttpTransportError(
                f"{request.method.decode()} {url.host_header}: {type(error).__name__}: {error}"
            )
            problem.__cause__ = error
            if answered:
                raise problem from error
            raise _Unanswered(problem) from error
        finally:
            if done:
                self._release(connection, url.origin)
            else:
                connection.abort()
        assert response is not None  # noqa: S101 - h11 gives a Response before any Data or EndOfMessage
        headers = tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in response.headers)
        return HttpResponse(response.status_code, headers, bytes(received[:max_body]), truncated=not done)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _headers(url: HttpUrl, method: str, body: bytes, extra: Mapping[str, str] | None) -> list[tuple[str, str]]:
    headers = [("Host", url.host_header), ("User-Agent", USER_AGENT), ("Accept", "*/*")]
    if url.authorization:
        headers.append(("Authorization", url.authorization))
    if body:
        headers.append(("Content-Type", "application/json"))
    if body or method in ("POST", "PUT", "PATCH"):
        headers.append(("Content-Length", str(len(body))))
    headers.extend((extra or {}).items())
    return headers
