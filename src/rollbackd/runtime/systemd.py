"""systemd glue: sd_notify (READY, RELOADING, STOPPING, STATUS, WATCHDOG) and logging to journald.

sd_notify goes through systemd-python's ``systemd.daemon.notify`` when it is installed and sees the same
``NOTIFY_SOCKET`` as we do; otherwise through a datagram of our own, as gunicorn's ``systemd.py`` does (path or
abstract ``@`` socket). Without ``NOTIFY_SOCKET`` every call is a no-op, so the daemon runs the same by hand.

Checked against systemd-python 235 (libsystemd 252): its ``notify()`` handles abstract sockets, but it reads the
process's C environment, not an injected mapping, and ``unset_environment=True`` unsets only the C copy (later
calls then send nothing while ``os.environ`` still names the socket). So the library is used only when the
injected environment names the same socket as the process environment, and never asked to unset it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TextIO

from rollbackd.config.secrets import RedactingFilter

logger = logging.getLogger(__name__)

Backend = Literal["systemd-python", "socket", "disabled"]

# systemd-python is optional (the `systemd` extra) and untyped. mypy, run from the repository root, may also take
# the unit-file folder systemd/ for a namespace package (attr-defined); Python prefers the real package.
try:
    from systemd import daemon as _sd_daemon  # type: ignore[import-untyped, import-not-found, attr-defined, unused-ignore]
except ImportError:  # pragma: no cover - depends on what is installed
    _sd_daemon = None

try:
    from systemd import journal as _sd_journal  # type: ignore[import-untyped, import-not-found, attr-defined, unused-ignore]
except ImportError:  # pragma: no cover - depends on what is installed
    _sd_journal = None


def systemd_python_available() -> bool:
    """True when systemd-python (notify and the journal) can be imported."""
    return _sd_daemon is not None and _sd_journal is not None


class Notifier:
    """Tell the service manager how the daemon is doing. Never raises: a lost notification is logged, not fatal.

    ``environ`` defaults to ``os.environ``; tests pass their own mapping. ``use_library=False`` forces the
    socket fallback even when systemd-python is installed.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        use_library: bool = True,
        pid: int | None = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self._pid = os.getpid() if pid is None else pid
        self._monotonic_ns = monotonic_ns  # CLOCK_MONOTONIC on Linux, the clock systemd means by MONOTONIC_USEC
        self._failing = False
        self.address = self._environ.get("NOTIFY_SOCKET", "")
        self.backend: Backend = self._choose_backend(use_library)

    def _choose_backend(self, use_library: bool) -> Backend:
        if not self.address:
            return "disabled"
        if not self.address.startswith(("/", "@")):
            logger.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; not notifying", self.address)
            return "disabled"
        same_socket = os.environ.get("NOTIFY_SOCKET") == self.address
        if use_library and _sd_daemon is not None and same_socket:
            return "systemd-python"
        return "socket"

    @property
    def enabled(self) -> bool:
        return self.backend != "disabled"

    def ready(self) -> bool:
        """Startup (or a reload) is complete: the metrics listener is up and the first probe round has begun."""
        return self.notify("READY=1")

    def reloading(self) -> bool:
        """A reload has begun; send ``ready()`` when it is done. MONOTONIC_USEC is what systemd >= 253 wants for
        Type=notify-reload; older managers ignore it."""
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={self._monotonic_ns() // 1000}")

    def stopping(self) -> bool:
        """Shutdown has begun."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """One line for ``systemctl status`` (``vbrpg: OK, last backup 3m ago``). Newlines would start new
        assignments, so they become spaces."""
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        """Keep-alive ping; send it from the loop's tick only while the loop is healthy."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None when the watchdog is off or
        meant for another process (``WATCHDOG_PID``)."""
        watchdog_pid = self._environ.get("WATCHDOG_PID")
        if watchdog_pid:
            try:
                if int(watchdog_pid) != self._pid:
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._environ.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2 / 1_000_000

    def notify(self, state: str) -> bool:
        """Send ``state`` (newline-separated assignments). Return True when it was sent."""
        if self.backend == "disabled":
            return False
        try:
            if self.backend == "systemd-python":
                sent = bool(_sd_daemon.notify(state, unset_environment=False))
            else:
                self._send_datagram(state.encode())
                sent = True
        except OSError as error:
            if not self._failing:
                logger.warning("cannot notify systemd through %s: %s", self.address, error)
            self._failing = True
            return False
        if sent:
            self._failing = False
        return sent

    def _send_datagram(self, payload: bytes) -> None:
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address)


# ---- logging ----------------------------------------------------------------------------------------------

STRUCTURED_FIELDS = ("service", "probe", "action", "incident")
"""Record attributes (``extra={...}``) that become journald fields (upper-cased) and ``name=value`` in text."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SYSLOG_IDENTIFIER = "rollbackd"
HANDLER_NAME = "rollbackd"  # the root handler configure_logging() replaces when called again
_JOURNAL_FIELD = re.compile(r"[A-Z0-9][A-Z0-9_]*\Z")
_NEEDS_QUOTES = re.compile(r'[\s="]')


def _structured_values(record: logging.LogRecord) -> list[tuple[str, str]]:
    values = []
    for name in STRUCTURED_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            values.append((name, str(value)))
    return values


def journal_fields(record: logging.LogRecord) -> dict[str, str]:
    """Given a record, return its extra journald fields: ``service`` → ``SERVICE`` and so on, plus any
    attribute that already is a valid journald field name (``MESSAGE_ID``), as systemd-python allows."""
    fields = {name.upper(): value for name, value in _structured_values(record)}
    for name, value in vars(record).items():
        if _JOURNAL_FIELD.match(name) and name not in fields:
            fields[name] = value if isinstance(value, str) else str(value)
    return fields


class TextFormatter(logging.Formatter):
    """``%(asctime)s %(levelname)s %(name)s: %(message)s`` with ``service=vbrpg probe=health`` appended,
    logfmt-style (values with spaces are quoted)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        for name, value in _structured_values(record):
            line += f" {name}={json.dumps(value) if _NEEDS_QUOTES.search(value) or not value else value}"
        return line


if _sd_journal is not None:

    class StructuredJournalHandler(_sd_journal.JournalHandler):  # type: ignore[misc, unused-ignore]
        """systemd-python's JournalHandler, sending only valid journald fields: the standard ones, SERVICE=,
        PROBE=, ACTION=, INCIDENT= from the record's extras, and upper-case extras such as MESSAGE_ID.

        (The base class passes every record attribute, lower-case ones included, which journald drops.)
        ``sender_function`` is systemd-python's documented hook to replace ``journal.send``; tests use it.
        """

        def __init__(self, level: int = logging.NOTSET, sender_function: Callable[..., Any] | None = None) -> None:
            super().__init__(level, sender_function=sender_function or _sd_journal.send)
            self._constant_fields = {"SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER}

        def emit(self, record: logging.LogRecord) -> None:
            try:
                message = self.format(record)
                fields: dict[str, Any] = dict(self._constant_fields)
                if record.exc_text:
                    fields["EXCEPTION_TEXT"] = record.exc_text
                fields.update(journal_fields(record))
                fields.update(
                    PRIORITY=str(self.map_priority(record.levelno)),
                    LOGGER=record.name,
                    THREAD_NAME=record.threadName,
                    PROCESS_NAME=record.processName,
                    CODE_FILE=record.pathname,
                    CODE_LINE=record.lineno,
                    CODE_FUNC=record.funcName,
                )
                self.send(message, **fields)
            except Exception:  # noqa: BLE001 - logging must never raise; handleError reports it
                self.handleError(record)


def running_under_systemd(environ: Mapping[str, str] | None = None, stream: TextIO | None = None) -> bool:
    """True when stderr is connected to the journal (``JOURNAL_STREAM`` names its device and inode), or when
    ``INVOCATION_ID`` says systemd started us and stderr is not a terminal (a shell in a desktop's systemd
    user session inherits INVOCATION_ID too)."""
    environ = os.environ if environ is None else environ
    stream = sys.stderr if stream is None else stream
    try:
        stat = os.fstat(stream.fileno())
        is_tty = stream.isatty()
    except (OSError, ValueError):  # closed or not a real file (pytest's capture)
        return False
    journal_stream = environ.get("JOURNAL_STREAM", "")
    if journal_stream == f"{stat.st_dev}:{stat.st_ino}":
        return True
    return bool(environ.get("INVOCATION_ID")) and not is_tty


def configure_logging(
    level: str | int,
    *,
    secrets: Iterable[str] = (),
    under_systemd: bool | None = None,
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send the root logger to journald with structured fields when running under systemd and systemd-python is
    installed, else plain text to ``stream`` (stderr), redacting ``secrets`` (config/secrets.py) and URL
    credentials from every record. Call it again after a reload: it replaces its handler.
    Return the handler it installed."""
    numeric = level if isinstance(level, int) else logging.getLevelNamesMapping()[level.upper()]
    if under_systemd is None:
        under_systemd = running_under_systemd(environ, stream)
    handler: logging.Handler
    if under_systemd and _sd_journal is not None:
        handler = StructuredJournalHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr if stream is None else stream)
        handler.setFormatter(TextFormatter())
    handler.set_name(HANDLER_NAME)
    handler.addFilter(RedactingFilter(secrets))  # URL credentials and ``secrets`` never reach a log line
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler
