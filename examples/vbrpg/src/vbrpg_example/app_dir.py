"""The app dir: `alembic.ini` plus `alembic/` (env.py, script.py.mako, versions/), the "code" of a deploy.

The package carries a template; `init-app` copies it where a deploy (or a fault) may change it. Read-only
commands may use the packaged template itself; anything that writes scripts needs a copy of its own.
"""

import re
import shutil
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from vbrpg_example.errors import UsageError

_URL_LINE = re.compile(r"^sqlalchemy\.url = .*$", re.MULTILINE)


@dataclass(frozen=True)
class AppDir:
    path: Path

    @classmethod
    def packaged(cls) -> "AppDir":
        """Return the template shipped inside the package (never write to it)."""
        return cls(Path(str(files("vbrpg_example") / "template")))

    @property
    def ini_path(self) -> Path:
        return self.path / "alembic.ini"

    @property
    def script_location(self) -> Path:
        return self.path / "alembic"

    @property
    def versions_path(self) -> Path:
        return self.script_location / "versions"

    def validate(self) -> "AppDir":
        """Return self if it looks like an app dir. Raise UsageError naming what is missing."""
        for needed in (self.ini_path, self.script_location / "env.py", self.versions_path):
            if not needed.exists():
                raise UsageError(f"{self.path} is not an app dir: {needed} is missing (see `init-app`)")
        return self

    @property
    def is_packaged(self) -> bool:
        return self.path.resolve() == AppDir.packaged().path.resolve()


def init_app_dir(target: Path, database: Path | None = None, *, force: bool = False) -> AppDir:
    """Copy the template to `target`; point its alembic.ini at `database` if given.

    Without `database` the ini keeps the template's relative URL (data/vbrpg.db, resolved from the app dir
    as the runbook's `cd backend && alembic ...` does), and data/ is created. Raise UsageError if `target`
    is not empty and not `force`.
    """
    if target.exists() and any(target.iterdir()) and not force:
        raise UsageError(f"{target} is not empty; pass --force to copy the template over it")
    template = AppDir.packaged()
    shutil.copytree(template.path, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    app_dir = AppDir(target)
    ini_text = app_dir.ini_path.read_text()
    if database is not None:
        url = f"sqlite:///{database.resolve()}"
        app_dir.ini_path.write_text(_URL_LINE.sub(lambda _: f"sqlalchemy.url = {url}", ini_text, count=1))
    else:
        (target / "data").mkdir(exist_ok=True)
    return app_dir
