"""Probe tests: a state dir in tmp_path and a context to build probes with."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rollbackd.probes import ProbeContext
from rollbackd.state_dir import StateDir

# Helpers shared with the daemon tests (vbrpg_service.py, test_alembic_scripts.py) live one folder up.
TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def state_dir(tmp_path: Path) -> StateDir:
    state = StateDir(tmp_path / "state")
    state.ensure()
    return state


@pytest.fixture
def context(state_dir: StateDir) -> Iterator[ProbeContext]:
    """A context for probes that do not speak HTTP (its client is never used, only closed)."""
    client = httpx.AsyncClient(trust_env=False)
    yield ProbeContext(http=client, state_dir=state_dir)
    asyncio.run(client.aclose())


from vbrpg_service import served_vbrpg, vbrpg_app, vbrpg_template  # noqa: E402,F401 - fixtures for the tests of this folder
