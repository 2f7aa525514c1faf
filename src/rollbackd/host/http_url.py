"""An http(s) URL as the daemon's HTTP client sends it: one parse for the client and for the config's checks.

The config rejects a URL the client could not send (config/model.py: ``http_url_problem``) by calling this same
parse, so a URL that passes the config is one the client sends as written. Characters a request target may not
hold (a space, non-ASCII) are percent-encoded as browsers and httpx do; a control character is refused.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import SplitResult, unquote, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
# A request target keeps RFC 3986's unreserved and reserved characters and valid %XX escapes; the rest is encoded.
_TO_ENCODE = re.compile(r"%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%\[\]]")
_HOST_NAME = re.compile(
    r"\A[A-Za-z0-9_]([A-Za-z0-9_\-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_\-]*[A-Za-z0-9_])?)*\.?\Z"
)


class InvalidUrl(ValueError):
    """The text is not an http(s) URL the client can send to; the message says why."""


@dataclass(frozen=True)
class HttpUrl:
    scheme: str  # "http" or "https"
    host: str  # a name, an IPv4 address or an IPv6 address without brackets
    port: int
    target: str  # the request target: path and query, percent-encoded, never empty
    authorization: str = ""  # a Basic header value when the URL carries user:password@

    @property
    def origin(self) -> tuple[str, str, int]:
        """What one keep-alive connection serves: scheme, host and port."""
        return (self.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


@lru_cache(maxsize=512)  # the probes ask for the same few URLs every second
def parse_url(url: str) -> HttpUrl:
    """Given ``url``, return what the client sends to. Raise InvalidUrl for a control character, a scheme other
    than http/https, no host or a bad one, or a port that is not a number in 1-65535."""
    control = control_character(url)
    if control:
        raise InvalidUrl(control)
    try:
        parts = urlsplit(url)
    except ValueError as error:  # an unclosed "[" of an IPv6 address
        raise InvalidUrl(f"Invalid URL: {error}") from error
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise InvalidUrl("expected http:// or https:// and a host")
    host = _host(parts)
    port = _port(parts, DEFAULT_PORTS[scheme])
    target = _encode(parts.path or "/") + (f"?{_encode(parts.query)}" if parts.query else "")
    return HttpUrl(scheme, host, port, target, _authorization(parts))


def control_character(text: str) -> str:
    """'' when ``text`` holds no control character, else which one and where."""
    index = next((index for index, char in enumerate(text) if ord(char) < 0x20 or ord(char) == 0x7F), None)
    return "" if index is None else f"control character {text[index]!r} at index {index}"


def _host(parts: SplitResult) -> str:
    host = parts.hostname or ""
    if "[" in parts.netloc:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError as error:
            raise InvalidUrl(f"Invalid IPv6 address: {host!r}") from error
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as error:
            raise InvalidUrl(f"Invalid host name: {host!r}") from error
    if not _HOST_NAME.match(host):
        raise InvalidUrl(f"Invalid host name: {host!r}")
    return host


def _port(parts: SplitResult, default: int) -> int:
    text = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if not text:
        return default
    if not text.isdigit() or not text.isascii():
        raise InvalidUrl(f"Invalid port: {text!r}")
    port = int(text)
    if not 0 < port < 65536:
        raise InvalidUrl(f"port {port} is out of range 1-65535")
    return port


def _authorization(parts: SplitResult) -> str:
    if parts.username is None:
        return ""
    credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return "Basic " + base64.b64encode(credentials).decode("ascii")


def _encode(text: str) -> str:
    return _TO_ENCODE.sub(lambda match: "".join(f"%{byte:02X}" for byte in match.group().encode()), text)
