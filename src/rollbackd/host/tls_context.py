"""The daemon's TLS settings, with the CA bundle read at the first https connection instead of at start-up.

A context that parses certifi's ~140 CA certificates when the client is made costs ~3 MiB of the daemon's RSS for
its whole life (bench/RESULTS.md, issue 13), though most services are probed over http on 127.0.0.1. This is the
same context (``ssl.create_default_context(cafile=certifi.where())``, what httpx makes for ``verify=True`` without
``trust_env``) that loads the bundle when it first wraps a connection. Until then it holds no CA, so nothing can be
verified against less than the bundle.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any


class LazyCertifiContext(ssl.SSLContext):
    """An ``ssl.SSLContext`` for clients that verifies against certifi's bundle, read on first use.

    host/http_client.py calls ``load()`` in a worker thread before its first TLS connection, so the one read of the
    bundle never blocks the event loop; a lock makes it one read when two connections start at once."""

    _loaded: bool
    _load_lock: threading.Lock

    def __new__(cls) -> LazyCertifiContext:
        # A client context: check_hostname and CERT_REQUIRED, as create_default_context makes it.
        context = super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)
        context._loaded = False
        context._load_lock = threading.Lock()
        return context

    @property
    def loaded(self) -> bool:
        """True once the CA bundle has been read (the first TLS connection)."""
        return self._loaded

    def load(self) -> None:
        """Read the CA bundle now, unless it was read already (blocking: call it from a worker thread)."""
        with self._load_lock:
            if not self._loaded:
                import certifi

                self.load_verify_locations(cafile=certifi.where())
                self._loaded = True

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self.load()
        return super().wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self.load()
        return super().wrap_socket(*args, **kwargs)
