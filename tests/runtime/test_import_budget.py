"""What the daemon keeps in memory after start-up and a reload, pinned so it does not creep back (issue 13).

A real ``rollbackd run`` in a child interpreter, on a real SQLite file and a real state dir: once it has sent
READY=1 to a notify socket of its own it gets SIGHUP (a reload validates the file again), and once it is ready
again, SIGTERM; then the child lists ``sys.modules``. Each excluded package costs MiB of RSS for the daemon's
whole life: Alembic and SQLAlchemy (the state DB's queries go through ``sqlite3``; its upgrade, the one user of
both, runs in a child process), httpx with httpcore and anyio (the daemon's HTTP is host/http_client.py on h11:
~6 MiB less, bench/RESULTS.md), click/pygments (httpx's own command line), and pydantic with pydantic_core
(~10 MiB: the config is validated in a child and handed over as plain dataclasses, config/child_load.py), and
statistics with fractions and decimal (~0.5 MiB for the verifier's one median: target/verify.py's median_of).
prometheus_client and watchdog are loaded, and are not pinned here. Nor does a config without
``[service.replication]`` load the replica drills, and the daemon never loads the deploy/rehearse code
(``rollbackd migrate`` and ``rehearse`` run it in their own process). Of the command line it holds only
``cli/run.py`` and the parser's helpers: ``main()`` imports the module of the command it runs (0.4 MiB less).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.probes.game_database import make_game_database

EXCLUDED = (
    "alembic",
    "sqlalchemy",
    "greenlet",
    "click",
    "pygments",
    "rich",
    "mako",
    "httpx",
    "httpcore",
    "anyio",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_extensions",
    "statistics",
    "fractions",
    "decimal",
)
# What a config that does not use it does not load (issue 13): packages, or modules by their full name.
UNUSED_BY_THIS_CONFIG = ("rollbackd.replication.drill", "rollbackd.deploy")
# The command line's modules `rollbackd run` needs; every other rollbackd.cli module is another command's.
DAEMON_CLI_MODULES = {"rollbackd.cli", "rollbackd.cli.common", "rollbackd.cli.run", "rollbackd.cli.times"}

CHILD = """
import json, os, signal, socket, sys, threading
listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
listener.bind(sys.argv[2])
os.environ["NOTIFY_SOCKET"] = sys.argv[2]

def reload_then_stop():
    for signum in (signal.SIGHUP, signal.SIGTERM):
        while b"READY=1" not in listener.recv(65536):
            pass
        os.kill(os.getpid(), signum)

threading.Thread(target=reload_then_stop, daemon=True).start()
from rollbackd.cli import main
code = main(["--config", sys.argv[1], "run"])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def daemon_modules(tmp_path: Path) -> set[str]:
    database = make_game_database(tmp_path / "vbrpg.db")
    # The migrations are found as a user's are: through alembic.ini (read without importing Alembic).
    (tmp_path / "alembic" / "versions").mkdir(parents=True)
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/alembic\n")
    config = tmp_path / "rollbackd.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\nmetrics_listen = ""\n\n'
        f'[[service]]\nname = "vbrpg"\nworkdir = "{tmp_path}"\ndatabase = "{database}"\n'
        'base_url = "http://127.0.0.1:9"\n'
    )
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(config), str(tmp_path / "notify.sock")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, child.stderr
    assert "reloaded" in child.stderr, child.stderr  # the SIGHUP validated the file again, and applied it
    return set(report["modules"])


@pytest.fixture(scope="module")
def started_daemon_modules(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    return daemon_modules(tmp_path_factory.mktemp("import-budget"))


def test_the_started_and_reloaded_daemon_loads_no_migration_framework_no_sqlalchemy_no_httpx_no_pydantic(
    started_daemon_modules: set[str],
) -> None:
    modules = started_daemon_modules
    assert "rollbackd.runtime.daemon" in modules and "rollbackd.probes.integrity" in modules  # it did start
    loaded = sorted(name for name in modules if name.split(".")[0] in EXCLUDED)
    assert not loaded, loaded


def test_a_daemon_without_replication_loads_no_replica_drills_and_no_deploy_code(
    started_daemon_modules: set[str],
) -> None:
    assert "rollbackd.runtime.service_runtime" in started_daemon_modules  # it did start, with a service runtime
    loaded = sorted(
        name
        for name in started_daemon_modules
        for unused in UNUSED_BY_THIS_CONFIG
        if name == unused or name.startswith(unused + ".")
    )
    assert not loaded, loaded


def test_the_daemon_holds_no_other_subcommands_module(started_daemon_modules: set[str]) -> None:
    cli = {name for name in started_daemon_modules if name == "rollbackd.cli" or name.startswith("rollbackd.cli.")}
    assert "rollbackd.cli.run" in cli  # it did start through the command line
    assert cli <= DAEMON_CLI_MODULES, sorted(cli - DAEMON_CLI_MODULES)
