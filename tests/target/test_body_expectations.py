"""Body expectations: JSON pointers (RFC 6901) to the value an answer must hold, and text it must contain."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollbackd.config.model import ConfigError, parse_config
from rollbackd.target.body_expectations import MISSING, BodyExpectations, resolve_pointer

DOCUMENT = {"status": "ok", "checks": [{"ok": True}, {"ok": 1}], "a/b": {"m~n": 2}}


@pytest.mark.parametrize(
    ("pointer", "value"),
    [("", DOCUMENT), ("/status", "ok"), ("/checks/0/ok", True), ("/a~1b/m~0n", 2), ("/checks/2", MISSING),
     ("/checks/01", MISSING), ("/nope", MISSING), ("/status/x", MISSING)],
)  # fmt: skip
def test_a_pointer_names_the_value_rfc_6901_says(pointer: str, value: object) -> None:
    assert resolve_pointer(DOCUMENT, pointer) == value


def test_mismatches_say_what_was_there_and_true_is_not_one() -> None:
    body = b'{"status": "ok", "checks": [{"ok": true}, {"ok": 1}], "count": 2}'
    assert BodyExpectations({"/status": "ok", "/checks/0/ok": True, "/count": 2.0}).mismatch(body) == ""
    assert BodyExpectations({"/checks/1/ok": True}).mismatch(body) == "/checks/1/ok is 1, expected True"
    assert BodyExpectations({"/missing": "x"}).mismatch(body) == "/missing is nothing, expected 'x'"
    assert BodyExpectations({"/status": "ok"}).mismatch(b"<html>").startswith("body is not JSON")
    assert BodyExpectations(contains="degraded").mismatch(body) == "body does not contain 'degraded'"
    assert not BodyExpectations()


@pytest.mark.parametrize("pointer", ["status", "/a~2"])
def test_a_key_that_is_not_a_json_pointer_is_a_config_error(tmp_path: Path, pointer: str) -> None:
    text = f"""
[[service]]
name = "vbrpg"
workdir = "."
database = "vbrpg.db"
base_url = "http://127.0.0.1:8000"

[service.probes.health]
expect_json = {{ "{pointer}" = "ok" }}
"""
    with pytest.raises(ConfigError) as raised:
        parse_config(text, tmp_path / "rollbackd.toml")
    [problem] = raised.value.problems
    assert problem.key == "service[0].probes.health.expect_json"
    assert "JSON pointer" in problem.message
