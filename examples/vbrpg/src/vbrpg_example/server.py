"""`serve` in the foreground: uvicorn with a pidfile and a readiness signal.

The serving process owns its pidfile (written before start, removed at shutdown if it still names this
process) so a foreground service and a detached one look the same to `stop` and to the kill fault.
Readiness is written to an inherited pipe once the port is bound, the way sd_notify's READY=1 works, so
`serve --detach` waits on an event instead of polling the port.
"""

import os
import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn

from vbrpg_example.app import ServiceSettings, create_app
from vbrpg_example.errors import ServiceFailed
from vbrpg_example.pidfile import remove_pidfile, write_pidfile
from vbrpg_example.service_process import READY_MESSAGE, running_service


class _Server(uvicorn.Server):
    """uvicorn's server with two hooks: after the port is bound, and after shutdown."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None], on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready
        self._on_shutdown = on_shutdown

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets=sockets)
        # uvicorn re-raises a captured SIGTERM after serving, which ends the process before any `finally`.
        self._on_shutdown()


def serve(
    settings: ServiceSettings,
    host: str,
    port: int,
    *,
    pidfile: Path | None = None,
    ready_fd: int | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT. Raise ServiceFailed if the pidfile names another live service or uvicorn
    cannot start (a port in use, for one)."""
    pid = os.getpid()
    if pidfile is not None:
        other = running_service(pidfile)
        if other is not None and other != pid:
            raise ServiceFailed(f"already running as pid {other} (pidfile {pidfile})")
        write_pidfile(pidfile, pid)

    def on_ready() -> None:
        if ready_fd is not None:
            os.write(ready_fd, READY_MESSAGE)
            os.close(ready_fd)

    def on_shutdown() -> None:
        if pidfile is not None:
            remove_pidfile(pidfile, pid)

    config = uvicorn.Config(create_app(settings), host=host, port=port, log_level="info")
    try:
        _Server(config, on_ready, on_shutdown).run()
    except SystemExit as exit_request:
        # uvicorn exits with 1 from startup when it cannot bind; its log line says why.
        if exit_request.code not in (0, None):
            raise ServiceFailed(f"uvicorn could not start on {host}:{port} (see its log above)") from None
    finally:
        on_shutdown()
