"""Fixtures for the backup tests; the helpers themselves are in helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from rollbackd.metrics import Metrics
from rollbackd.state.state_dir import StateDir

from .helpers import ExampleApp, example_available, make_example_app


@pytest.fixture
def state_dir(tmp_path: Path) -> StateDir:
    state = StateDir(tmp_path / "state")
    state.ensure()
    return state


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def example(tmp_path: Path) -> Iterator[ExampleApp]:
    """The real example service's app dir (migrated, seeded); stopped at the end if a test started it."""
    if not example_available():
        pytest.fail("vbrpg-example is not installed: pip install -e examples/vbrpg")
    app = make_example_app(tmp_path)
    yield app
    app.stop()
