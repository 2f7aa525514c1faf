"""script_location read without Alembic gives what Alembic's own Config gives, layout by layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.config import Config as AlembicConfig

from rollbackd.config.alembic_options import alembic_option

INI = "alembic.ini"
PYPROJECT = "pyproject.toml"
LAYOUTS = {
    "ini, relative": {INI: "[alembic]\nscript_location = migrations\n"},
    "ini, here": {INI: "[alembic]\nscript_location = %(here)s/db/migrations\n"},
    "ini, here in the DEFAULT section": {
        INI: "[DEFAULT]\nbase = %(here)s/x\n[alembic]\nscript_location = %(base)s/m\n"
    },
    "ini without the option, pyproject with it": {
        INI: "[alembic]\nsqlalchemy.url = sqlite:///x.db\n",
        PYPROJECT: '[tool.alembic]\nscript_location = "%(here)s/from_toml"\n',
    },
    "ini wins over pyproject": {
        INI: "[alembic]\nscript_location = from_ini\n",
        PYPROJECT: '[tool.alembic]\nscript_location = "from_toml"\n',
    },
    "pyproject only, relative": {PYPROJECT: '[tool.alembic]\nscript_location = "db"\n'},
    "pyproject without [tool.alembic]": {PYPROJECT: "[project]\nname = 'x'\n"},
    "another section name only": {INI: "[other]\nscript_location = nowhere\n"},
    "neither": {},
}


@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
def test_script_location_is_read_as_alembic_reads_it(tmp_path: Path, layout: str) -> None:
    for name, text in LAYOUTS[layout].items():
        (tmp_path / name).write_text(text)
    ini = tmp_path / INI if (tmp_path / INI).exists() else None
    pyproject = tmp_path / PYPROJECT if (tmp_path / PYPROJECT).exists() else None
    alembic = AlembicConfig(file_=ini, toml_file=pyproject)
    expected = (
        alembic.get_alembic_option("script_location"),
        alembic.file_config.has_option(alembic.config_ini_section, "script_location"),
    )
    assert alembic_option("script_location", ini, pyproject) == expected


def test_a_pyproject_whose_tool_alembic_is_not_a_table_is_a_value_error(tmp_path: Path) -> None:
    (tmp_path / PYPROJECT).write_text('[tool]\nalembic = "x"\n')
    with pytest.raises(ValueError, match="not a table"):
        alembic_option("script_location", None, tmp_path / PYPROJECT)
