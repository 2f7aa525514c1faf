"""sd_notify datagrams arrive on a real AF_UNIX socket; log records become journald fields or logfmt text.

journald itself is not running here (PID 1 is not systemd), so the journal tests hand the handler a capturing
``sender_function`` — systemd-python's documented hook for replacing ``journal.send`` — and check the fields it
would have sent.
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rollbackd.runtime import systemd
from rollbackd.runtime.systemd import Notifier, TextFormatter, configure_logging, running_under_systemd

BACKENDS = ["systemd-python", "socket"]


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket like the one systemd listens on, and the NOTIFY_SOCKET value that names it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = tmp_path / "notify"
        sock.bind(str(path))
        address = str(path)
    else:
        name = f"rollbackd-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        address = "@" + name
    sock.setblocking(False)  # a sent datagram is already queued when sendto returns
    yield sock, address
    sock.close()


def make_notifier(backend: str, address: str, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> Notifier:
    if backend == "systemd-python":
        pytest.importorskip("systemd.daemon", reason="systemd-python is not installed")
        monkeypatch.setenv("NOTIFY_SOCKET", address)  # the library reads the process environment
        notifier = Notifier(use_library=True, **kwargs)
    else:
        notifier = Notifier({"NOTIFY_SOCKET": address}, use_library=False, **kwargs)
    assert notifier.backend == backend
    return notifier


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_notification_arrives_with_its_exact_payload(
    backend: str, receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = receiver
    notifier = make_notifier(backend, address, monkeypatch, monotonic_ns=lambda: 123_456_789_000)

    assert notifier.ready()
    assert sock.recv(4096) == b"READY=1"
    assert notifier.status("vbrpg: OK, last backup 3m ago")
    assert sock.recv(4096) == b"STATUS=vbrpg: OK, last backup 3m ago"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.reloading()
    assert sock.recv(4096) == b"RELOADING=1\nMONOTONIC_USEC=123456789"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


@pytest.mark.parametrize("backend", BACKENDS)
def test_status_with_newlines_stays_one_assignment(
    backend: str, receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = receiver
    notifier = make_notifier(backend, address, monkeypatch)
    notifier.status("vbrpg: HOLD\nREADY=1")
    assert sock.recv(4096) == b"STATUS=vbrpg: HOLD READY=1"


def test_reloading_carries_the_current_monotonic_clock(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = receiver
    notifier = make_notifier("socket", address, monkeypatch)
    before = time_monotonic_usec()
    notifier.reloading()
    after = time_monotonic_usec()
    match = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)", sock.recv(4096))
    assert match
    assert before <= int(match[1]) <= after


def time_monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_without_notify_socket_every_call_is_a_no_op(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, _ = receiver
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    for notifier in (Notifier(), Notifier({}), Notifier({}, use_library=False)):
        assert notifier.backend == "disabled"
        assert not notifier.enabled
        assert notifier.ready() is False
        assert notifier.status("x") is False
        assert notifier.watchdog() is False
        assert notifier.stopping() is False
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


def test_injected_environment_naming_another_socket_uses_the_fallback(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd-python would read the process's NOTIFY_SOCKET, not the injected one: the fallback must send."""
    sock, address = receiver
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier({"NOTIFY_SOCKET": address}, use_library=True)
    assert notifier.backend == "socket"
    assert notifier.ready()
    assert sock.recv(4096) == b"READY=1"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_vanished_socket_is_logged_once_and_never_raises(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = make_notifier(backend, str(tmp_path / "gone"), monkeypatch)
    with caplog.at_level(logging.WARNING, logger="rollbackd.runtime.systemd"):
        assert notifier.watchdog() is False
        assert notifier.watchdog() is False
    assert [r.getMessage() for r in caplog.records if "cannot notify systemd" in r.getMessage()] == [
        f"cannot notify systemd through {tmp_path / 'gone'}: [Errno 2] No such file or directory"
    ]


def test_a_relative_notify_socket_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rollbackd.runtime.systemd"):
        notifier = Notifier({"NOTIFY_SOCKET": "notify.sock"}, use_library=False)
    assert notifier.backend == "disabled"
    assert "neither a path nor an abstract socket" in caplog.text


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "not-a-pid"}, None),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_our_pid(
    environ: dict[str, str], expected: float | None
) -> None:
    assert Notifier(environ, pid=4242).watchdog_interval() == expected


def test_watchdog_interval_defaults_to_our_own_pid() -> None:
    environ = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(environ).watchdog_interval() == 1.0


# ---- logging ----------------------------------------------------------------------------------------------


class CapturingSender:
    """Stands in for systemd.journal.send (journald does not run here): records what would be sent."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, message: str, **fields: Any) -> None:
        self.messages.append((message, fields))


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, with its handlers and level put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def journal_logger(sender: CapturingSender) -> logging.Logger:
    pytest.importorskip("systemd.journal", reason="systemd-python is not installed")
    handler = systemd.StructuredJournalHandler(sender_function=sender)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger(f"rollbackd.test.{uuid.uuid4().hex}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    return log


def test_extra_fields_become_upper_case_journal_fields() -> None:
    sender = CapturingSender()
    log = journal_logger(sender)
    log.warning(
        "restored %s", "vbrpg_backup_20240101_000000.db", extra={"service": "vbrpg", "action": "restore", "incident": 7}
    )
    [(message, fields)] = sender.messages
    assert message == "restored vbrpg_backup_20240101_000000.db"
    assert fields["SERVICE"] == "vbrpg"
    assert fields["ACTION"] == "restore"
    assert fields["INCIDENT"] == "7"
    assert "PROBE" not in fields
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "rollbackd"
    assert fields["LOGGER"] == log.name
    assert all(re.fullmatch(r"[A-Z0-9][A-Z0-9_]*", name) for name in fields), sorted(fields)


def test_journal_keeps_message_id_and_exception_text() -> None:
    sender = CapturingSender()
    log = journal_logger(sender)
    try:
        raise RuntimeError("disk full")
    except RuntimeError:
        log.exception("backup failed", extra={"service": "vbrpg", "MESSAGE_ID": "0123456789abcdef0123456789abcdef"})
    [(message, fields)] = sender.messages
    assert message.startswith("backup failed\nTraceback")
    assert "RuntimeError: disk full" in fields["EXCEPTION_TEXT"]
    assert fields["MESSAGE_ID"] == "0123456789abcdef0123456789abcdef"
    assert fields["PRIORITY"] == "3"


def text_record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("rollbackd.probes", logging.INFO, __file__, 1, "health %s", ("failed",), None)
    record.__dict__.update(extra)
    return record


def test_text_lines_carry_the_fields_after_the_message() -> None:
    line = TextFormatter().format(text_record(service="vbrpg", probe="health", incident=3))
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO rollbackd\.probes: health failed service=vbrpg probe=health "
        r"incident=3",
        line,
    ), line


def test_text_values_with_spaces_are_quoted() -> None:
    line = TextFormatter().format(text_record(action="restart then hold", service=""))
    assert line.endswith(': health failed service="" action="restart then hold"'), line


def test_text_line_without_extras_is_the_plain_format() -> None:
    line = TextFormatter().format(text_record())
    assert line.endswith(" INFO rollbackd.probes: health failed"), line


def test_configure_logging_writes_text_to_stderr_outside_systemd(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging("warning", under_systemd=False, stream=stream)
    log = logging.getLogger("rollbackd.test")
    log.info("not shown")
    log.warning("lock held", extra={"service": "vbrpg", "probe": "sqlite_lock"})
    assert stream.getvalue().endswith(" WARNING rollbackd.test: lock held service=vbrpg probe=sqlite_lock\n")
    assert "not shown" not in stream.getvalue()


def test_configure_logging_redacts_secrets_and_url_credentials(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging("info", secrets=["Hooksecret99"], under_systemd=False, stream=stream)
    log = logging.getLogger("rollbackd.test")
    log.warning("GET %s failed: %s", "http://ops:pw@127.0.0.1:9/x?token=t0k", "ConnectError to Hooksecret99")
    try:
        raise OSError("cannot reach https://h/Hooksecret99")
    except OSError:
        log.exception("webhook failed")
    output = stream.getvalue()
    assert "GET http://***@127.0.0.1:9/x?token=*** failed: ConnectError to ***" in output
    assert "OSError: cannot reach https://h/***" in output
    assert "Hooksecret99" not in output and "t0k" not in output


def test_configure_logging_again_replaces_its_handler(root_logger: logging.Logger) -> None:
    first = configure_logging("info", under_systemd=False, stream=io.StringIO())
    second = configure_logging("debug", under_systemd=False, stream=io.StringIO())
    assert second in root_logger.handlers
    assert first not in root_logger.handlers
    assert root_logger.level == logging.DEBUG


def test_configure_logging_under_systemd_uses_the_journal_handler(root_logger: logging.Logger) -> None:
    pytest.importorskip("systemd.journal", reason="systemd-python is not installed")
    handler = configure_logging("info", under_systemd=True)
    assert isinstance(handler, systemd.StructuredJournalHandler)


def test_stderr_connected_to_the_journal_counts_as_under_systemd(tmp_path: Path) -> None:
    with open(tmp_path / "stream", "w") as stream:
        stat = os.fstat(stream.fileno())
        assert running_under_systemd({"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}, stream)
        assert not running_under_systemd({"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino + 1}"}, stream)
        assert not running_under_systemd({}, stream)
        assert running_under_systemd({"INVOCATION_ID": "5f6e"}, stream)


def test_invocation_id_on_a_terminal_is_not_systemd() -> None:
    """A shell inside a desktop's systemd user session inherits INVOCATION_ID; its user wants text."""
    leader, follower = os.openpty()
    with open(follower, "w") as terminal:
        assert not running_under_systemd({"INVOCATION_ID": "5f6e"}, terminal)
    os.close(leader)
