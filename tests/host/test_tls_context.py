"""The daemon's TLS context reads the CA bundle at the first https connection, and verifies as httpx's default
does: a real TLS server on 127.0.0.1 with a self-signed certificate is refused (the client fails closed), and only
then is the bundle read; the same client, given a context that trusts the server's certificate, gets its answer."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest

from rollbackd.host.http_client import HttpClient, HttpConnectError
from rollbackd.host.tls_context import LazyCertifiContext


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    await writer.drain()
    writer.close()


def test_the_bundle_is_read_at_the_first_https_connection_and_a_self_signed_server_is_refused(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)

    async def scenario() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        context = LazyCertifiContext()
        async with server, HttpClient(ssl_context=context) as client:
            assert not context.loaded and context.cert_store_stats()["x509_ca"] == 0
            with pytest.raises(HttpConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://127.0.0.1:{port}/", timeout=10)
            assert context.loaded and context.cert_store_stats()["x509_ca"] > 50  # certifi's bundle

        trusting = LazyCertifiContext()
        trusting.load_verify_locations(cafile=cert)  # the same context, told to trust this server as well
        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        async with server, HttpClient(ssl_context=trusting) as client:
            response = await client.get(f"https://127.0.0.1:{port}/", timeout=10)
            assert response.text == "ok"

    asyncio.run(scenario())


def test_it_checks_host_names_and_requires_a_certificate_as_the_default_context_does() -> None:
    context, default = LazyCertifiContext(), ssl.create_default_context()
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert (context.protocol, context.options, context.minimum_version, context.verify_flags) == (
        default.protocol,
        default.options,
        default.minimum_version,
        default.verify_flags,
    )
