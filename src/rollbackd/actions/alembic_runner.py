"""Run the service's own Alembic (its argv, its environment, its env.py) to upgrade or downgrade.

rollbackd never imports the application's migrations: it runs ``alembic`` as the runbook's engineer would,
``cd backend && alembic downgrade -1``, as an argv list with a timeout. When the code no longer has a script the
database needs (the code was rolled back: "Can't locate revision"), the scripts kept in the script vault are
added through a temporary ini whose ``version_locations`` lists both the versions dir and the vault's copies.

Given ``database``, the runner migrates that file instead of the service's (a rehearsal's scratch copy): the
temporary ini's ``sqlalchemy.url`` names it, and every environment value or argv word that names the service's
database (``VBRPG_DB=/opt/.../vbrpg.db``, ``-x db=data/vbrpg.db``, ``sqlite:///data/vbrpg.db``) is rewritten to
it, since an env.py may prefer those to the ini. Whether env.py really followed is for the caller to prove.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from rollbackd.config.model import ServiceConfig
from rollbackd.host.commands import CommandResult, run_command_async
from rollbackd.host.private_dirs import make_private_dir


class ScriptSource(Protocol):
    """The script vault, as the runner needs it."""

    def materialize_missing(self, versions_dir: Path, target_dir: Path) -> list[Path]: ...


class AlembicRunner:
    def __init__(
        self,
        service: ServiceConfig,
        scratch_dir: Path,
        vault: ScriptSource | None = None,
        *,
        database: Path | None = None,
    ) -> None:
        self.service = service
        self.scratch_dir = scratch_dir
        self.vault = vault
        self.database = database  # None: the service's own database

    async def downgrade(self, target: str) -> CommandResult:
        """``alembic downgrade TARGET`` (a revision id, ``-1``, or ``base``)."""
        return await self.run("downgrade", target)

    async def upgrade(self, target: str = "head") -> CommandResult:
        return await self.run("upgrade", target)

    async def run(self, *arguments: str) -> CommandResult:
        command: Sequence[str] = self.service.alembic.command
        env: Mapping[str, str] = self.service.alembic.env
        if self.database is not None:
            live, cwd = self.service.database, self.service.workdir
            command = [command[0], *(redirect_database(word, live, self.database, cwd) for word in command[1:])]
            env = redirected_environment({**os.environ, **env}, live, self.database, cwd)
        with self._ini() as ini:
            argv = [*command, "-c", str(ini), *arguments]
            timeout = self.service.alembic.timeout
            return await run_command_async(argv, cwd=self.service.workdir, env=env, timeout=timeout)

    @contextmanager
    def _ini(self) -> Iterator[Path]:
        """Yield the ini to run with: the service's own, or a temporary one that also sees the vault's scripts
        and, for another database, names it in ``sqlalchemy.url``."""
        if self.vault is None and self.database is None:
            yield self.service.alembic.ini
            return
        make_private_dir(self.scratch_dir)
        workspace = Path(tempfile.mkdtemp(prefix=f"alembic-{self.service.name}-", dir=self.scratch_dir))
        try:
            vault_scripts = workspace / "vault_versions"
            vault_scripts.mkdir()
            copies = self.vault.materialize_missing(self.service.versions_dir, vault_scripts) if self.vault else []
            if not copies and self.database is None:
                yield self.service.alembic.ini
                return
            yield write_ini_with_extra_versions(
                self.service.alembic.ini,
                self.service.script_location,
                [self.service.versions_dir, vault_scripts] if copies else [],
                workspace / "alembic.ini",
                url=f"sqlite:///{self.database}" if self.database is not None else None,
            )
        finally:
            shutil.rmtree(workspace, ignore_errors=True)


def write_ini_with_extra_versions(
    original: Path, script_location: Path, versions: list[Path], target: Path, *, url: str | None = None
) -> Path:
    """Copy an alembic.ini to ``target`` with an absolute script_location and ``version_locations`` = versions
    (left as it was when ``versions`` is empty), and ``sqlalchemy.url`` = ``url`` when given.

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
    if versions:
        parser.set("alembic", "path_separator", "os")
        parser.set("alembic", "version_path_separator", "os")
        parser.set("alembic", "version_locations", os.pathsep.join(str(path) for path in versions))
    if url is not None:
        parser.set("alembic", "sqlalchemy.url", url)
    with target.open("w", encoding="utf-8") as handle:
        parser.write(handle)
    return target


# A value that may name a database: an optional "KEY=" (argv words such as ``db=PATH``), an optional SQLite URL
# scheme, the path, an optional URL query.
_DATABASE_WORD = re.compile(r"^(?P<head>(?:[^=/]*=)?(?:sqlite(?:\+\w+)?:///)?)(?P<path>[^?]+)(?P<query>\?.*)?$")


def redirect_database(value: str, live: Path, target: Path, cwd: Path) -> str:
    """Given an environment value or argv word, return it with any reference to ``live`` replaced by ``target``.

    Catches the absolute path (as written or resolved, also inside a URL or after ``KEY=``) and a path relative
    to ``cwd`` that resolves to ``live``. Anything else is returned unchanged.
    """
    for name in sorted({str(live), os.path.realpath(live)}, key=len, reverse=True):
        if name in value:
            return value.replace(name, str(target))
    match = _DATABASE_WORD.match(value)
    if match is None:
        return value
    path = match.group("path")
    if os.path.realpath(cwd / path) != os.path.realpath(live):
        return value
    return f"{match.group('head')}{target}{match.group('query') or ''}"


def redirected_environment(environment: Mapping[str, str], live: Path, target: Path, cwd: Path) -> dict[str, str]:
    """The environment with every value that names ``live`` pointed at ``target`` instead (see redirect_database)."""
    return {key: redirect_database(value, live, target, cwd) for key, value in environment.items()}
