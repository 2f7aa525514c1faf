"""One timed HTTP GET against the service, with its failure named in the probes' reason vocabulary."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from rollbackd.host.http_client import HttpClient, HttpConnectError, HttpError, HttpTimeout

MAX_BODY_BYTES = 64 * 1024
SNIPPET_CHARS = 300


@dataclass(frozen=True)
class HttpResult:
    url: str
    latency: float
    status: int | None = None  # None: no answer
    error_reason: str = ""  # timeout, connect_refused, connect_error, transport_error ('' when answered)
    error: str = ""
    body: bytes = b""
    content_type: str = ""

    @property
    def snippet(self) -> str:
        return self.body[: SNIPPET_CHARS * 4].decode("utf-8", errors="replace")[:SNIPPET_CHARS]

    def body_is_valid(self) -> bool:
        """False when the response says it is JSON and is not (a half-written or proxy error page)."""
        if "json" not in self.content_type.lower():
            return True
        try:
            json.loads(self.body)
        except ValueError:
            return False
        return True


def status_reason(status: int, ok_status: frozenset[int]) -> str:
    """'' when ``status`` counts as success (``ok_status``, or any 2xx when it is empty), else the failure reason."""
    if (status in ok_status) if ok_status else 200 <= status < 300:
        return ""
    if 500 <= status < 600:
        return "http_5xx"
    if 400 <= status < 500:
        return "http_4xx"
    return "unexpected_status"


async def timed_get(client: HttpClient, url: str, timeout: float) -> HttpResult:
    """GET ``url`` with ``timeout`` for connect and read; read at most MAX_BODY_BYTES of the body. Never raises
    for network trouble: it is the answer."""
    started = time.perf_counter()
    try:
        response = await client.get(url, timeout=timeout, max_body=MAX_BODY_BYTES)
    except HttpTimeout as error:
        return HttpResult(url, time.perf_counter() - started, error_reason="timeout", error=_describe(error))
    except HttpConnectError as error:
        reason = "connect_refused" if error.refused else "connect_error"
        return HttpResult(url, time.perf_counter() - started, error_reason=reason, error=_describe(error))
    except HttpError as error:
        return HttpResult(url, time.perf_counter() - started, error_reason="connect_error", error=_describe(error))
    return HttpResult(
        url=url,
        latency=time.perf_counter() - started,
        status=response.status,
        body=response.body,
        content_type=response.header("content-type"),
    )


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:SNIPPET_CHARS]
