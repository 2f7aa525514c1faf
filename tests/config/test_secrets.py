"""Secrets in config URLs never reach output: userinfo, query values and {secret:...} path segments are
redacted in check-config, status and log lines, and a config holding one that others can read is warned about."""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path

import pytest

from rollbackd.cli.status import _show as show
from rollbackd.config.model import parse_config
from rollbackd.config.secrets import redact_text, secrets_in, unwrap_secrets

HOOK = "https://hooks.example/services/T0/{secret:Bq7hooksecret}?token=tok3nvalue&x=1"
CONFIG = f"""
[daemon]
state_dir = "state"

[[daemon.webhooks]]
url = "{HOOK}"

[[service]]
name = "vbrpg"
workdir = "."
database = "vbrpg.db"
base_url = "http://ops:hunter22pw@127.0.0.1:9"
"""
SECRETS = ("Bq7hooksecret", "tok3nvalue", "hunter22pw")


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("GET http://u:pw@h:1/x failed", "GET http://***@h:1/x failed"),
        ("posting https://h/hook?token=abc&debug to", "posting https://h/hook?token=***&*** to"),
        ("latency /api/rooms/X?key=v1 slow", "latency /api/rooms/X?key=*** slow"),
        ("https://h/services/{secret:XYZ}", "https://h/services/***"),
        ("ConnectError: Bq7hooksecret refused", "ConnectError: *** refused"),
        ("no URL here? fine", "no URL here? fine"),
    ],
)
def test_redaction_replaces_credentials_and_keeps_the_rest(text: str, redacted: str) -> None:
    assert redact_text(text, ["Bq7hooksecret", "1"]) == redacted


@pytest.mark.parametrize(
    "line",
    [
        "webhook http://ops:pw@127.0.0.1:9/hook?token=tok3n: hold alert not delivered",
        "see https://example.org/hook?key=abcdef.",
    ],
)
def test_a_line_redacted_twice_reads_as_redacted_once(line: str) -> None:
    """The daemon's log filter redacts lines its callers already redacted: sentence punctuation after a query
    value must survive both passes ("...?token=***: hold alert", not "...?token=*** hold alert")."""
    once = redact_text(line)
    assert "tok3n" not in once and "abcdef" not in once and "pw@" not in once
    assert redact_text(once) == once
    assert once.endswith(line[-1]) and (": hold" in once) == (": hold" in line)


def test_a_marked_segment_is_sent_unwrapped_and_every_secret_is_known(tmp_path: Path) -> None:
    config = parse_config(CONFIG, tmp_path / "rollbackd.toml")
    assert config.daemon.webhooks[0].send_url == "https://hooks.example/services/T0/Bq7hooksecret?token=tok3nvalue&x=1"
    assert unwrap_secrets("/a/{secret:b}/c") == "/a/b/c"
    assert set(SECRETS) <= set(secrets_in(config))


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollbackd", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_check_config_redacts_and_warns_while_others_can_read_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rollbackd.toml"
    path.write_text(CONFIG)
    path.chmod(0o644)
    shown = check_config(path)
    assert shown.returncode == 0, shown.stderr
    for secret in SECRETS:
        assert secret not in shown.stdout + shown.stderr
    assert "https://hooks.example/services/T0/***?token=***&x=***" in shown.stdout
    assert "http://***@127.0.0.1:9" in shown.stdout
    assert "holds secrets" in shown.stderr
    assert "readable by every user (mode 0644)" in shown.stderr

    path.chmod(0o600)
    private = check_config(path)
    assert private.returncode == 0, private.stderr
    assert "holds secrets" not in private.stderr


def test_a_config_without_secrets_is_not_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "rollbackd.toml"
    path.write_text(CONFIG.replace(HOOK, "https://hooks.example/plain").replace("ops:hunter22pw@", ""))
    path.chmod(0o644)
    assert "holds secrets" not in check_config(path).stderr


def test_status_output_is_redacted_in_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = parse_config(CONFIG, tmp_path / "rollbackd.toml")
    detail = "GET http://ops:hunter22pw@127.0.0.1:9/health: ConnectError (hook Bq7hooksecret down)"
    status = {
        "daemon": None,
        "services": {"vbrpg": {"policy": {"state": "degraded", "reason": detail}, "probes": {"health": {
            "ok": False, "reason": "connect_refused", "detail": {"url": "http://ops:hunter22pw@127.0.0.1:9/health"}}}}},
    }  # fmt: skip
    for as_json in (False, True):
        show(argparse.Namespace(service=None, json=as_json), copy.deepcopy(status), secrets_in(config))
        out = capsys.readouterr().out
        assert "http://***@127.0.0.1:9/health" in out
        assert "hook *** down" in out
        for secret in SECRETS:
            assert secret not in out
