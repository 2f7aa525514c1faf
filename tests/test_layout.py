"""The package's rooms and the order they stand in: a module imports only from its own room or the ones below.

A newcomer reads the roles from the tree (STYLE.md); this test keeps an import from running back up a layer,
which is how a helper module ends up pulling in the whole daemon.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "rollbackd"

# Lowest first. A module may import from its own layer and every layer before it.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__init__", "exit_codes", "units", "observation", "host"}),
    frozenset({"config"}),
    frozenset({"metrics", "metric_families"}),
    frozenset({"target"}),
    frozenset({"state"}),
    frozenset({"probes", "backup", "replication"}),
    frozenset({"policy"}),
    frozenset({"actions"}),
    frozenset({"deploy"}),
    frozenset({"runtime"}),
    frozenset({"cli", "__main__"}),
)


def layer_of(room: str) -> int:
    for index, rooms in enumerate(LAYERS):
        if room in rooms:
            return index
    raise AssertionError(f"{room!r} is in no layer of tests/test_layout.py: give it one")


def room_of(module: str) -> str:
    """Given ``rollbackd.backup.restore``, return ``backup``; given ``rollbackd``, return ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "rollbackd":
                modules.extend(f"rollbackd.{alias.name}" for alias in node.names if alias.name != "__version__")
            elif node.module.startswith("rollbackd."):
                modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names if alias.name.startswith("rollbackd."))
    return modules


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.relative_to(PACKAGE).parts)


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(relative.parts)


def test_the_package_root_holds_only_the_foundation() -> None:
    loose = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert set(loose) <= set().union(*LAYERS[:3]) | {"__main__"}, loose


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_up_a_layer(path: Path) -> None:
    own = layer_of(room_of(module_name(path)))
    upward = [m for m in imported_modules(path) if layer_of(room_of(m)) > own]
    assert not upward, f"{module_name(path)} (layer {own}) imports from a higher layer: {upward}"


# The harnesses merged into tests/support/ (stack, deploy_app, rollbackd_daemon, rollbackd_config, ...): a copy
# growing back beside a test folder would start the service and the daemon a second way.
MERGED_HARNESSES = (
    "tests/daemon_process.py",
    "tests/daemon/rollbackd_process.py",
    "tests/daemon/notify_listener.py",
    "tests/e2e/stack.py",
    "tests/deploy/deploy_app.py",
)


@pytest.mark.parametrize("harness", MERGED_HARNESSES)
def test_a_merged_harness_stays_merged(harness: str) -> None:
    assert not (PACKAGE.parents[1] / harness).exists(), f"{harness} is in tests/support/ now"
