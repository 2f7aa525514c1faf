"""Which config file the user means: ``--config``, else ``$ROLLBACKD_CONFIG``, else the packaged default.

Kept apart from the models so the command line can name these in its help without loading pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

DEFAULT_CONFIG_PATH = Path("/etc/rollbackd/rollbackd.toml")
CONFIG_ENV_VAR = "ROLLBACKD_CONFIG"


def resolve_config_path(explicit: str | None, environ: Mapping[str, str]) -> Path:
    """Return the config path: the --config option, then $ROLLBACKD_CONFIG, then /etc/rollbackd/rollbackd.toml."""
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_ENV_VAR):
        return Path(environ[CONFIG_ENV_VAR])
    return DEFAULT_CONFIG_PATH


def missing_config_message(explicit: str | None, environ: Mapping[str, str]) -> str:
    """Given where the path came from, say that no file is there and both ways to name another one."""
    if explicit:
        source = "named by --config"
    elif environ.get(CONFIG_ENV_VAR):
        source = f"named by ${CONFIG_ENV_VAR}"
    else:
        source = f"the default; neither --config nor ${CONFIG_ENV_VAR} is set"
    return f"no config file there ({source}); name one with --config PATH or ${CONFIG_ENV_VAR}=PATH"
