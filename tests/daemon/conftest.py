"""Fixtures for the daemon's lifecycle tests: example-service instances (copies of one made per session), a
notify socket like systemd's, and a free port for /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.probes.example_app import VbrpgApp
from tests.support.notify_listener import NotifyListener
from tests.support.vbrpg_service import free_port


@pytest.fixture(scope="session")
def vbrpg_template(tmp_path_factory: pytest.TempPathFactory) -> VbrpgApp:
    """The example app made once per worker: init-app, migrate to head (WAL), seed. Tests work on copies."""
    return VbrpgApp(tmp_path_factory.mktemp("daemon-vbrpg-template")).create()


@pytest.fixture
def make_app(tmp_path: Path, vbrpg_template: VbrpgApp) -> Callable[[str], VbrpgApp]:
    """``make_app("alpha")``: this test's own copy of the example app under tmp_path/alpha (not served)."""

    def make(name: str) -> VbrpgApp:
        return vbrpg_template.copy_to(tmp_path / name)

    return make


@pytest.fixture
def notify(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifyListener]:
    """A bound notify socket: a path by default, ``@pytest.mark.parametrize("notify", ["abstract"],
    indirect=True)`` for an abstract one."""
    listener = NotifyListener(getattr(request, "param", "path"), tmp_path)
    yield listener
    listener.close()
    assert not listener.callback_errors, listener.callback_errors


@pytest.fixture
def metrics_port() -> int:
    return free_port()
