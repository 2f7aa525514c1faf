"""The command line answers before it loads the daemon: what ``rollbackd --help`` imports, pinned.

Measured with the interpreter's own ``-X importtime`` on a real ``python -m rollbackd --help``; the heavy
libraries each cost tens of MiB and hundreds of ms (issue 13), and a top-level import in any subcommand module
brings them back.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("pydantic", "sqlalchemy", "alembic", "httpx", "prometheus_client", "watchdog", "psutil", "asyncio")


def imported_by(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "rollbackd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode in (0, 2), result.stderr
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


def test_help_imports_none_of_the_heavy_libraries() -> None:
    modules = imported_by("--help")
    assert "rollbackd.cli.backup" in modules  # the probe sees the subcommand modules load
    loaded = sorted(name for name in modules if name.split(".")[0] in HEAVY)
    assert not loaded, loaded
    assert not [name for name in modules if name.startswith(("rollbackd.runtime.daemon", "rollbackd.config.model"))]


def test_a_usage_error_imports_none_of_the_heavy_libraries() -> None:
    modules = imported_by("status", "--no-such-option")
    assert not sorted(name for name in modules if name.split(".")[0] in HEAVY)
    assert "rollbackd.cli.status" in modules and "rollbackd.cli.backup" not in modules  # its command's module only


def test_migrate_parser_default_is_the_deploy_lock_wait() -> None:
    from rollbackd.cli import migrate
    from rollbackd.deploy import migrate as deploy_migrate

    assert migrate.LOCK_WAIT == deploy_migrate.LOCK_WAIT


def test_check_config_validates_with_pydantic_core_alone() -> None:
    """pydantic's Python layer (its schema generation, its plugin discovery through importlib.metadata) was
    ~0.1 s of each check-config and status; the validator is built by config/validation.py instead."""
    modules = imported_by("check-config", "config/demo.toml")
    assert "pydantic_core" in modules and "rollbackd.config.validation" in modules
    assert not sorted(name for name in modules if name.split(".")[0] == "pydantic" or name == "importlib.metadata")
