"""Run the service's own Alembic (its argv, its environment, its env.py) to upgrade or downgrade.

rollbackd never imports the application's migrations: it runs ``alembic`` as the runbook's engineer would,
``cd backend && alembic downgrade -1``, as an argv list with a timeout. When the code no longer has a script the
database needs (the code was rolled back: "Can't locate revision"), the scripts kept in the script vault are
added through a temporary ini whose ``version_locations`` lists both the versions dir and the vault's copies.
"""

from __future__ import annotations

import configparser
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from rollbackd.commands import CommandResult, run_command_async
from rollbackd.config import ServiceConfig


class ScriptSource(Protocol):
    """The script vault, as the runner needs it."""

    def materialize_missing(self, versions_dir: Path, target_dir: Path) -> list[Path]: ...


class AlembicRunner:
    def __init__(self, service: ServiceConfig, scratch_dir: Path, vault: ScriptSource | None = None) -> None:
        self.service = service
        self.scratch_dir = scratch_dir
        self.vault = vault

    async def downgrade(self, target: str) -> CommandResult:
        """``alembic downgrade TARGET`` (a revision id, ``-1``, or ``base``)."""
        return await self.run("downgrade", target)

    async def upgrade(self, target: str = "head") -> CommandResult:
        return await self.run("upgrade", target)

    async def run(self, *arguments: str) -> CommandResult:
        with self._ini() as ini:
            argv = [*self.service.alembic.command, "-c", str(ini), *arguments]
            return await run_command_async(
                argv, cwd=self.service.workdir, env=self.service.alembic.env, timeout=self.service.alembic.timeout
            )

    @contextmanager
    def _ini(self) -> Iterator[Path]:
        """Yield the ini to run with: the service's own, or a temporary one that also sees the vault's scripts."""
        if self.vault is None:
            yield self.service.alembic.ini
            return
        self.scratch_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        workspace = Path(tempfile.mkdtemp(prefix=f"alembic-{self.service.name}-", dir=self.scratch_dir))
        try:
            vault_scripts = workspace / "vault_versions"
            vault_scripts.mkdir()
            if not self.vault.materialize_missing(self.service.versions_dir, vault_scripts):
                yield self.service.alembic.ini
                return
            yield write_ini_with_extra_versions(
                self.service.alembic.ini,
                self.service.script_location,
                [self.service.versions_dir, vault_scripts],
                workspace / "alembic.ini",
            )
        finally:
            shutil.rmtree(workspace, ignore_errors=True)


def write_ini_with_extra_versions(original: Path, script_location: Path, versions: list[Path], target: Path) -> Path:
    """Copy an alembic.ini to ``target`` with an absolute script_location and ``version_locations`` = versions.

    ``%(here)s`` is replaced by the original's folder first, so URLs and paths written relative to it still point
    where they did. Both ``path_separator`` (Alembic >= 1.16) and ``version_path_separator`` (older) are set.
    """
    text = original.read_text(encoding="utf-8").replace("%(here)s", str(original.parent))
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    if not parser.has_section("alembic"):
        parser.add_section("alembic")
    parser.set("alembic", "script_location", str(script_location))
    parser.set("alembic", "path_separator", "os")
    parser.set("alembic", "version_path_separator", "os")
    parser.set("alembic", "version_locations", os.pathsep.join(str(path) for path in versions))
    with target.open("w", encoding="utf-8") as handle:
        parser.write(handle)
    return target
