"""Probe tests: a state dir in tmp_path and a context to build probes with."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollbackd.host.http_client import HttpClient
from rollbackd.probes import ProbeContext
from rollbackd.state.state_dir import StateDir
from tests.probes.example_app import VbrpgApp, serving


@pytest.fixture
def state_dir(tmp_path: Path) -> StateDir:
    state = StateDir(tmp_path / "state")
    state.ensure()
    return state


@pytest.fixture
def context(state_dir: StateDir) -> Iterator[ProbeContext]:
    """A context for probes that do not speak HTTP (its client is never used, only closed)."""
    client = HttpClient()
    yield ProbeContext(http=client, state_dir=state_dir)
    asyncio.run(client.aclose())


@pytest.fixture(scope="session")
def vbrpg_template(tmp_path_factory: pytest.TempPathFactory) -> VbrpgApp:
    """The example app made once per session: init-app, migrate to head (WAL), seed. Tests work on copies."""
    return VbrpgApp(tmp_path_factory.mktemp("vbrpg-template")).create()


@pytest.fixture
def vbrpg_app(tmp_path: Path, vbrpg_template: VbrpgApp) -> VbrpgApp:
    """An app dir with its database at head and seeded (not served), this test's own copy."""
    return vbrpg_template.copy_to(tmp_path / "vbrpg")


@pytest.fixture
def served_vbrpg(vbrpg_app: VbrpgApp) -> Iterator[VbrpgApp]:
    with serving(vbrpg_app) as app:
        yield app
