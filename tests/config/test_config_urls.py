"""Every URL in the config is checked as the HTTP client will parse it: one that passes a regex but not httpx
would fail every probe at run time (probe_error, DEGRADED for ever), so it is a config error with its key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rollbackd.config.model import ConfigError, parse_config

SERVICE = """
[daemon]
state_dir = "state"
{daemon}

[[service]]
name = "vbrpg"
workdir = "."
database = "vbrpg.db"
base_url = "{base_url}"
{service}
"""

BAD = [
    ("latency path with BEL", {"service": '[service.probes.latency]\npaths = ["/ok", "/api/\\u0007x"]'},
     "service[0].probes.latency.paths[1]", "control character '\\x07'"),
    ("health path with newline", {"service": 'health_path = "/health\\n"'}, "service[0].health_path", "'\\n'"),
    ("verify latency path with DEL", {"service": '[service.verify]\nlatency_paths = ["/a\\u007f"]'},
     "service[0].verify.latency_paths[0]", "control character"),
    ("smoke path with tab", {"service": '[[service.verify.smoke]]\nname = "s"\npath = "/api\\t"'},
     "service[0].verify.smoke[0].path", "control character '\\t'"),
    ("base_url with a bad port", {"base_url": "http://127.0.0.1:99999"}, "service[0].base_url", "out of range"),
    ("base_url with an unparsable host", {"base_url": "http://[::1:8000"}, "service[0].base_url", "HTTP client"),
    ("webhook with a control character", {"daemon": '[[daemon.webhooks]]\nurl = "https://hooks.example/\\u0001t"'},
     "daemon.webhooks[0].url", "control character"),
]  # fmt: skip


def config_text(daemon: str = "", base_url: str = "http://127.0.0.1:8000", service: str = "") -> str:
    return SERVICE.format(daemon=daemon, base_url=base_url, service=service)


@pytest.mark.parametrize(("case", "parts", "key", "fragment"), BAD, ids=[case[0] for case in BAD])
def test_a_url_httpx_cannot_send_is_a_config_error_at_its_key(
    tmp_path: Path, case: str, parts: dict[str, str], key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(config_text(**parts), tmp_path / "rollbackd.toml")
    [problem] = raised.value.problems
    assert (problem.key, problem.line is not None) == (key, True), raised.value.render()
    assert fragment in problem.message, problem.message


def test_smoke_placeholders_and_query_strings_stay_valid(tmp_path: Path) -> None:
    text = config_text(
        service='[[service.verify.smoke]]\nname = "s"\npath = "/api/rooms/{code}/agents?agent_id=1"\n'
        '[service.probes.latency]\npaths = ["/api/rooms/ABC123?x=a%20b"]'
    )
    service = parse_config(text, tmp_path / "rollbackd.toml").service[0]
    assert service.verify.smoke[0].path == "/api/rooms/{code}/agents?agent_id=1"


def test_check_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "rollbackd.toml"
    path.write_text(config_text(service='[service.probes.latency]\npaths = ["/api/\\u0007x"]'))
    result = subprocess.run(
        [sys.executable, "-m", "rollbackd", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "service[0].probes.latency.paths[0]: not a URL path the HTTP client can send" in result.stderr
    assert "Traceback" not in result.stderr
