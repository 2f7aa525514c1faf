"""The one parse of an http(s) URL that the client sends by and the config checks by (tests/config/ hold the
config's side: its key paths and messages)."""

from __future__ import annotations

import re

import pytest

from rollbackd.host.http_url import InvalidUrl, parse_url


def test_a_url_becomes_its_origin_and_request_target() -> None:
    url = parse_url("HTTPS://Hooks.Example:8443/api/rooms/{code}?x=a b&y=%20#fragment")
    assert url.origin == ("https", "hooks.example", 8443)
    assert url.target == "/api/rooms/%7Bcode%7D?x=a%20b&y=%20"  # encoded as httpx does; the fragment stays home
    assert url.host_header == "hooks.example:8443"


def test_default_ports_ipv6_and_credentials() -> None:
    assert parse_url("http://127.0.0.1").target == "/"
    assert parse_url("http://127.0.0.1").host_header == "127.0.0.1"
    ipv6 = parse_url("http://[::1]:8000/health")
    assert (ipv6.host, ipv6.port, ipv6.host_header) == ("::1", 8000, "[::1]:8000")
    assert parse_url("https://ops:p%40ss@hooks.example/").authorization == "Basic b3BzOnBAc3M="  # ops:p@ss


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://127.0.0.1:99999/", "out of range"),
        ("http://127.0.0.1:0/", "out of range"),
        ("http://127.0.0.1:80x/", "Invalid port"),
        ("http://[::1:8000", "Invalid URL"),
        ("http://[not-ipv6]/", "not-ipv6"),
        ("http://bad host/", "Invalid host name"),
        ("ftp://127.0.0.1/", "expected http:// or https://"),
        ("http:///path", "expected http:// or https://"),
        ("http://127.0.0.1/\x07", "control character '\\x07' at index 17"),
    ],
)
def test_what_the_client_cannot_send_is_refused_with_why(url: str, fragment: str) -> None:
    with pytest.raises(InvalidUrl, match=re.escape(fragment)):
        parse_url(url)
