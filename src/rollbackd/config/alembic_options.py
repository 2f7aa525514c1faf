"""An option of a service's Alembic set-up (``script_location``) read as Alembic reads it, without importing Alembic.

``alembic.config`` cannot be imported alone: it loads Alembic and SQLAlchemy, ~28 MiB of the daemon's RSS for its
whole life (bench/RESULTS.md, issue 13), to read one line of an ini file. This follows Alembic >= 1.16's
``Config.get_alembic_option``: the ini's ``[alembic]`` section first (ConfigParser, ``%(here)s`` = the ini's
folder), else ``[tool.alembic]`` of pyproject.toml (``%(here)s`` = its folder). tests/config/test_alembic_options.py
holds it to Alembic's own ``Config`` on each layout.
"""

from __future__ import annotations

import configparser
import tomllib
from pathlib import Path

INI_SECTION = "alembic"


def alembic_option(name: str, ini: Path | None, pyproject: Path | None) -> tuple[object, bool]:
    """Given an option name, the alembic.ini (or None) and the pyproject.toml (or None), return the option's value
    (None when neither sets it) and whether the ini set it. Raise configparser.Error, OSError or ValueError when a
    file cannot be read as Alembic reads it."""
    here = ini.absolute().parent if ini is not None else Path()
    parser = configparser.ConfigParser({"here": here.as_posix()})
    if ini is not None:
        parser.read([ini], encoding="locale")
    if parser.has_option(INI_SECTION, name):
        return parser.get(INI_SECTION, name), True
    if pyproject is None or not pyproject.exists():
        return None, False
    with pyproject.open("rb") as file:
        section = tomllib.load(file).get("tool", {}).get("alembic", {})
    if not isinstance(section, dict):
        raise ValueError(f"{pyproject}: [tool.alembic] is not a table")
    value = section.get(name)
    if isinstance(value, str):
        try:
            value = value % {"here": pyproject.absolute().parent.as_posix()}
        except (KeyError, TypeError) as error:
            raise ValueError(f"{pyproject}: [tool.alembic] {name}: {error}") from error
    return value, False
