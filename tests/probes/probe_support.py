"""Building a probe for one service in tmp_path and running it once, as the daemon would."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rollbackd.config.model import ServiceConfig, parse_config
from rollbackd.observation import Observation
from rollbackd.probes import Probe, observe


def service_config(
    tmp_path: Path,
    *,
    database: Path,
    base_url: str = "http://127.0.0.1:9",
    versions_dir: Path | None = None,
    extra: str = "",
) -> ServiceConfig:
    """A validated config for one service named vbrpg, as the daemon would load it; ``extra`` is TOML appended
    after the service's keys (e.g. ``[service.probes.rows]`` tables)."""
    text = f"""
[daemon]
state_dir = "{tmp_path / "state"}"

[[service]]
name = "vbrpg"
workdir = "{tmp_path}"
database = "{database}"
base_url = "{base_url}"

[service.deploy]
versions_dir = "{versions_dir or tmp_path / "alembic" / "versions"}"
{extra}
"""
    return parse_config(text, tmp_path / "rollbackd.toml").service[0]


def run_once(probe: Probe) -> Observation:
    return asyncio.run(observe(probe))
