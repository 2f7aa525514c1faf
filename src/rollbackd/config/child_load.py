"""The daemon's config, validated in a child interpreter and handed back pickled (issue 13).

pydantic and the validator it builds cost the daemon ~10 MiB for its whole life, though it validates only at
start-up and on reload. The config's classes are plain dataclasses (config/model.py), so a child can validate
with pydantic and send the result back; the daemon unpickles dataclasses and never imports pydantic.

The pickle comes from a child this process started with its own interpreter, over a pipe: it is as trusted as the
code itself. When the child cannot run or answer (no interpreter, no process slots, a crash), the config is
validated here instead, with a warning: the daemon must start and reload whatever its memory costs.

    python -P -m rollbackd.config.child_load PATH   # the child: a pickled ("config", Config) or ("error", ...)
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rollbackd.config.model import Config, ConfigError, ConfigProblem, load_config

log = logging.getLogger(__name__)

# The binary this process runs, whatever path started it: a daemon run as a user who may not search a directory
# on sys.executable's path (a venv whose interpreter links into /root) can still run it again this way.
RUNNING_INTERPRETER = "/proc/self/exe"
CHILD_TIMEOUT_SECONDS = 120.0  # a starved machine (issue 11's 1 % of a core) still validates well within it
# The daemon's own systemd channels: a child that inherited them could speak for it.
_DAEMON_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class ChildLoadFailed(Exception):
    """The child did not hand back a config or a ConfigError (it could not start, crashed or answered garbage)."""


class _CannotStart(ChildLoadFailed):
    """The interpreter could not be run by that path (missing, or a directory on it this user may not search)."""


def load_config_in_child(path: Path, *, python: str | None = None) -> Config:
    """Given a config file, return it validated as load_config does, by a child running ``python`` (by default
    this interpreter: by its path, else as /proc/self/exe). Raise ConfigError for a bad file, exactly as
    load_config would; when no child answers, validate here (pydantic then stays loaded) and log why."""
    interpreters = [python] if python else [sys.executable, RUNNING_INTERPRETER]
    failure = ChildLoadFailed("no interpreter to run")
    for interpreter in interpreters:
        try:
            return _validated_by_child(path, interpreter)
        except _CannotStart as error:
            failure = error  # the next way to run it, if any
        except ChildLoadFailed as error:
            failure = error
            break
    log.warning("validating %s in a child interpreter failed (%s); validating it in the daemon", path, failure)
    return load_config(path)


def _validated_by_child(path: Path, python: str) -> Config:
    if not python:
        raise _CannotStart("no interpreter path (sys.executable is empty)")
    try:
        child = subprocess.run(  # noqa: S603 - fixed argv, this interpreter
            [python, "-P", "-m", __name__, str(path)],
            capture_output=True,
            env=_child_environment(),
            timeout=CHILD_TIMEOUT_SECONDS,
            check=False,
        )
    except OSError as error:
        raise _CannotStart(str(error)) from error
    except subprocess.SubprocessError as error:
        raise ChildLoadFailed(str(error)) from error
    stderr = child.stderr.decode(errors="replace").strip()
    if child.returncode != 0:
        raise ChildLoadFailed(f"exit {child.returncode}: {stderr[-500:] or 'no output'}")
    try:
        answer = pickle.loads(child.stdout)  # noqa: S301 - our own child, over our own pipe (module docstring)
    except Exception as error:  # noqa: BLE001 - anything unpicklable is the child's failure, reported as such
        raise ChildLoadFailed(f"its answer could not be read: {error!r}") from error
    return _config_from(answer)


def _config_from(answer: Any) -> Config:
    if isinstance(answer, tuple) and len(answer) == 2 and answer[0] == "config" and isinstance(answer[1], Config):
        return answer[1]
    if isinstance(answer, tuple) and len(answer) == 3 and answer[0] == "error":
        _, source, problems = answer
        if isinstance(source, str) and all(isinstance(problem, ConfigProblem) for problem in problems):
            raise ConfigError(Path(source), problems)
    raise ChildLoadFailed(f"it answered {type(answer).__name__}, not a config")


def _child_environment() -> dict[str, str]:
    """This process's environment, without its systemd channels, and with this process's import path first: the
    child validates with the same code and libraries, installed or not, and found even when it runs as
    /proc/self/exe (which finds no venv of its own)."""
    environment = {key: value for key, value in os.environ.items() if key not in _DAEMON_ONLY_ENV}
    package_root = str(Path(__file__).resolve().parents[2])
    here = [entry for entry in sys.path if entry and os.path.isabs(entry)]  # never the cwd ('' or relative)
    inherited = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = os.pathsep.join([package_root, *here, *([inherited] if inherited else [])])
    return environment


def main(argv: Sequence[str]) -> int:
    """The child: validate ``argv[0]``, write the pickled answer to stdout. Anything else goes to stderr."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but the answer may reach the pipe
    try:
        answer: tuple[Any, ...] = ("config", load_config(Path(argv[0])))
    except ConfigError as error:
        answer = ("error", str(error.source), error.problems)
    out.write(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
