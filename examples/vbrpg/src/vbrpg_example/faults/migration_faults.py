"""Bad migrations, applied the way a deploy applies one: the script lands in the app dir's versions/ on top
of the current head, then `alembic upgrade head` runs.

Fault scripts are only ever written to an app dir made by `init-app`, never to the packaged template, and
each carries FAULT_MARKER on its first line so `reset` removes exactly them.
"""

import re
import shutil
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from vbrpg_example.alembic_runner import AlembicRun, run_alembic
from vbrpg_example.app_dir import AppDir
from vbrpg_example.errors import MigrationFailed, UsageError
from vbrpg_example.faults.catalog import FAULT_MARKER, Fault
from vbrpg_example.migrate import current_revision
from vbrpg_example.migration_scripts import MigrationScripts

_DOWN_REVISION_LINE = re.compile(r"^down_revision: .*$", re.MULTILINE)


@dataclass(frozen=True)
class Injection:
    fault: Fault
    script_path: Path
    down_revision: str
    revision_before: str | None
    revision_after: str | None
    alembic: AlembicRun


def writable_app_dir(app_dir: AppDir | None) -> AppDir:
    """Return `app_dir` if faults may write into it. Raise UsageError for none or the packaged template."""
    if app_dir is None:
        raise UsageError("faults write migration scripts: pass --app-dir (an app dir made by init-app)")
    app_dir.validate()
    if app_dir.is_packaged:
        raise UsageError("refusing to write fault scripts into the packaged template; use init-app")
    return app_dir


def render_script(fault: Fault, down_revision: str) -> str:
    """Return the fault's script with its down_revision set to `down_revision`."""
    template = (files("vbrpg_example") / "fault_scripts" / _script_name(fault)).read_text()
    line = f"down_revision: str | Sequence[str] | None = {down_revision!r}"
    return _DOWN_REVISION_LINE.sub(lambda _: line, template, count=1)


def inject(fault: Fault, app_dir: AppDir, database: Path) -> Injection:
    """Put the fault's script on top of the app dir's head and run `alembic upgrade head`.

    Return the outcome whether or not the upgrade failed (for fk-violation failing is the point).
    Raise UsageError if the script is already there or the app dir has no single head.
    """
    script_name = _script_name(fault)
    if not database.exists():
        raise UsageError(f"database {database} does not exist; migrate it first")
    scripts = MigrationScripts(app_dir)
    if scripts.knows(script_name.split("_", 1)[0]):
        raise UsageError(f"{fault.name} is already in {app_dir.versions_path}; run `fault reset` first")
    try:
        head = scripts.head()
    except ValueError as error:
        raise UsageError(str(error)) from error
    if head is None:
        raise UsageError(f"{app_dir.versions_path} has no migrations to put {fault.name} on top of")
    script_path = app_dir.versions_path / script_name
    script_path.write_text(render_script(fault, head))
    before = current_revision(database)
    run = run_alembic(app_dir, database, ["upgrade", "head"])
    return Injection(fault, script_path, head, before, current_revision(database), run)


def remove_script(injection: Injection, stash: Path | None = None) -> Path | None:
    """Take the injected script out of versions/ as a code rollback would; keep a copy in `stash` if given.

    Return the stashed copy's path.
    """
    stashed = None
    if stash is not None:
        stash.mkdir(parents=True, exist_ok=True)
        stashed = Path(shutil.copy2(injection.script_path, stash / injection.script_path.name))
    _unlink_with_cache(injection.script_path)
    return stashed


def reset(app_dir: AppDir) -> list[Path]:
    """Remove every fault script (files whose first line is the fault marker); return what was removed."""
    removed = []
    for script in sorted(app_dir.versions_path.glob("*.py")):
        with script.open() as handle:
            first_line = handle.readline()
        if first_line.startswith(FAULT_MARKER):
            _unlink_with_cache(script)
            removed.append(script)
    return removed


def require_success(injection: Injection) -> None:
    """Raise MigrationFailed if the injected upgrade failed (Alembic's output is the caller's to show)."""
    if not injection.alembic.ok:
        raise MigrationFailed(
            f"alembic upgrade head failed (exit {injection.alembic.returncode}); "
            f"the database stays at {injection.revision_after}"
        )


def _script_name(fault: Fault) -> str:
    if fault.script is None:
        raise ValueError(f"{fault.name} is not a migration fault")
    return fault.script


def _unlink_with_cache(script: Path) -> None:
    script.unlink(missing_ok=True)
    for compiled in (script.parent / "__pycache__").glob(f"{script.stem}.*.pyc"):
        compiled.unlink(missing_ok=True)
