"""Shared fixtures for the policy tests: a minimal service config."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rollbackd.config.model import ServiceConfig, parse_config


@pytest.fixture
def service(tmp_path: Path) -> ServiceConfig:
    text = textwrap.dedent(
        """
        [[service]]
        name = "vbrpg"
        workdir = "."
        database = "vbrpg.db"
        base_url = "http://127.0.0.1:8000"
        policy = { max_actions = 3, action_window = "1h", stable_after = "10m" }
        """
    )
    return parse_config(text, tmp_path / "rollbackd.toml").service[0]
