"""Fixtures for the safe-deploy tests: the example app (seeded, configured), served or not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.deploy_app import DeployApp, make_deploy_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[DeployApp]:
    """The example app at the clean head, seeded, with its rollbackd config; not served."""
    deploy_app = make_deploy_app(tmp_path)
    yield deploy_app
    deploy_app.stop()


@pytest.fixture
def served(app: DeployApp) -> DeployApp:
    """The same app, served detached (as its `command` control starts it); stopped at the end."""
    app.start()
    return app
