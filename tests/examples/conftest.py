"""Fixtures for the example service's tests: an app dir and a migrated database per test (copied from
one migrated once per session, to keep the run short), and a running service stopped at teardown."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.vbrpg_service import ExampleService, kill_detached, run_cli, running_service


@pytest.fixture(scope="session")
def template_app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An app dir made by init-app, never written to by tests (they get copies)."""
    directory = tmp_path_factory.mktemp("template") / "app"
    result = run_cli("init-app", directory)
    assert result.returncode == 0, result.stderr
    return directory


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory, template_app_dir: Path) -> Path:
    """A database at the clean head, closed (no WAL beside it), for tests to copy."""
    database = tmp_path_factory.mktemp("migrated") / "vbrpg.db"
    result = run_cli("migrate", "--db", database, "--app-dir", template_app_dir)
    assert result.returncode == 0, result.stderr
    return database


@pytest.fixture
def app_dir(tmp_path: Path, template_app_dir: Path) -> Path:
    """This test's own app dir: faults may write scripts into it."""
    return Path(shutil.copytree(template_app_dir, tmp_path / "app"))


@pytest.fixture
def database(tmp_path: Path, migrated_database: Path) -> Path:
    """This test's own database at the clean head, in WAL mode."""
    return Path(shutil.copyfile(migrated_database, tmp_path / "vbrpg.db"))


@pytest.fixture
def service(tmp_path: Path, database: Path, app_dir: Path) -> Iterator[ExampleService]:
    """The example service on a free port, serving this test's database and app dir, with a pidfile."""
    with running_service(database, app_dir, tmp_path / "service.log", pidfile=tmp_path / "service.pid") as running:
        yield running


@pytest.fixture
def chaos_service(tmp_path: Path, database: Path, app_dir: Path) -> Iterator[ExampleService]:
    """The example service with --chaos."""
    with running_service(database, app_dir, tmp_path / "chaos.log", chaos=True) as running:
        yield running


@pytest.fixture
def detached_pidfile(tmp_path: Path) -> Iterator[Path]:
    """A pidfile path for `serve --detach`; whatever it names is killed at teardown."""
    pidfile = tmp_path / "detached.pid"
    yield pidfile
    kill_detached(pidfile)
