"""The command line answers before it loads the daemon: what ``rollbackd --help`` imports, pinned.

Measured with the interpreter's own ``-X importtime`` on a real ``python -m rollbackd --help``; the heavy
libraries each cost tens of MiB and hundreds of ms (issue 13), and a top-level import in any subcommand module
brings them back.
"""

from __future__ import annotations

from tests.cli.test_command_modules import modules_loaded

HEAVY = ("pydantic", "sqlalchemy", "alembic", "httpx", "prometheus_client", "watchdog", "psutil", "asyncio")


def test_help_imports_none_of_the_heavy_libraries() -> None:
    modules, _ = modules_loaded(["--help"], 0)
    assert "rollbackd.cli.backup" in modules  # the probe sees the subcommand modules load
    loaded = sorted(name for name in modules if name.split(".")[0] in HEAVY)
    assert not loaded, loaded
    assert not [name for name in modules if name.startswith(("rollbackd.runtime.daemon", "rollbackd.config.model"))]


def test_a_usage_error_imports_none_of_the_heavy_libraries() -> None:
    modules, _ = modules_loaded(["status", "--no-such-option"], 2)
    assert not sorted(name for name in modules if name.split(".")[0] in HEAVY)
    assert "rollbackd.cli.status" in modules and "rollbackd.cli.backup" not in modules  # its command's module only


def test_migrate_parser_default_is_the_deploy_lock_wait() -> None:
    from rollbackd.cli import migrate
    from rollbackd.deploy import migrate as deploy_migrate

    assert migrate.LOCK_WAIT == deploy_migrate.LOCK_WAIT


def test_check_config_validates_with_pydantic_core_alone() -> None:
    """pydantic's Python layer (its schema generation, its plugin discovery through importlib.metadata) was
    ~0.1 s of each check-config and status; the validator is built by config/validation.py instead."""
    modules, _ = modules_loaded(["check-config", "config/demo.toml"], 0)
    assert "pydantic_core" in modules and "rollbackd.config.validation" in modules
    assert not sorted(name for name in modules if name.split(".")[0] == "pydantic" or name == "importlib.metadata")
