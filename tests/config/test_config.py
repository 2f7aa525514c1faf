"""The config file: every malformed input names its key path and line; valid input resolves paths."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rollbackd.config import toml_dump
from rollbackd.config.model import (
    CommandControl,
    ConfigError,
    SystemdControl,
    dump_config,
    load_config,
    parse_config,
    resolve_config_path,
)

REPO = Path(__file__).resolve().parents[2]

VALID_SERVICE = """
[[service]]
name = "vbrpg"
workdir = "/opt/vbrpg/backend"
database = "data/vbrpg.db"
base_url = "http://127.0.0.1:8000"
"""


def parse(text: str, tmp_path: Path) -> object:
    return parse_config(textwrap.dedent(text), tmp_path / "rollbackd.toml")


# (id, TOML text, expected key path, a fragment the message must contain)
MALFORMED = [
    ("unknown top-level key", VALID_SERVICE + "\n[metrics]\nport = 1\n", "metrics", "unknown key"),
    ("unknown daemon key", "[daemon]\nstate_dri = '/x'\n" + VALID_SERVICE, "daemon.state_dri", "state_dir"),
    ("unknown service key", VALID_SERVICE + "helth_path = '/h'\n", "service[0].helth_path", "health_path"),
    (
        "unknown nested key in inline table",
        VALID_SERVICE + "backups = { keep_lst = 3 }\n",
        "service[0].backups.keep_lst",
        "keep_last",
    ),
    (
        "missing workdir",
        '[[service]]\nname = "a"\ndatabase = "x.db"\nbase_url = "http://h:1"\n',
        "service[0].workdir",
        "required",
    ),
    (
        "missing database",
        '[[service]]\nname = "a"\nworkdir = "/w"\nbase_url = "http://h:1"\n',
        "service[0].database",
        "required",
    ),
    ("no services", "[daemon]\ndry_run = true\n", "service", "required"),
    ("empty service list", "service = []\n", "service", "at least 1"),
    (
        "wrong type for keep_last",
        VALID_SERVICE + "backups = { keep_last = '24' }\n",
        "service[0].backups.keep_last",
        "integer",
    ),
    (
        "keep_last zero",
        VALID_SERVICE + "backups = { keep_last = 0 }\n",
        "service[0].backups.keep_last",
        "greater than or equal to 1",
    ),
    ("bare number duration", VALID_SERVICE + "backups = { every = 3600 }\n", "service[0].backups.every", "with a unit"),
    (
        "bad duration unit",
        VALID_SERVICE + "probes.health = { every = '5 parsecs' }\n",
        "service[0].probes.health.every",
        "not a duration",
    ),
    (
        "zero interval",
        VALID_SERVICE + "probes.health = { every = '0s' }\n",
        "service[0].probes.health.every",
        "greater than 0",
    ),
    (
        "bad size",
        VALID_SERVICE + "backups = { min_free_bytes = 'lots' }\n",
        "service[0].backups.min_free_bytes",
        "not a size",
    ),
    ("dry_run not a bool", "[daemon]\ndry_run = 'yes'\n" + VALID_SERVICE, "daemon.dry_run", "boolean"),
    ("bad log level", "[daemon]\nlog_level = 'verbose'\n" + VALID_SERVICE, "daemon.log_level", "'debug'"),
    (
        "bad metrics listen",
        "[daemon]\nmetrics_listen = 'localhost'\n" + VALID_SERVICE,
        "daemon.metrics_listen",
        "host:port",
    ),
    (
        "metrics port out of range",
        "[daemon]\nmetrics_listen = '127.0.0.1:70000'\n" + VALID_SERVICE,
        "daemon.metrics_listen",
        "out of range",
    ),
    ("bad service name", VALID_SERVICE.replace('"vbrpg"', '"VB RPG"'), "service[0].name", "lowercase"),
    ("duplicate service names", VALID_SERVICE + VALID_SERVICE, "service[1].name", "duplicate service name"),
    (
        "base_url without scheme",
        VALID_SERVICE.replace("http://127.0.0.1:8000", "127.0.0.1:8000"),
        "service[0].base_url",
        "http://",
    ),
    ("health path relative", VALID_SERVICE + "health_path = 'health'\n", "service[0].health_path", "'/'"),
    (
        "unknown control kind",
        VALID_SERVICE + "control = { kind = 'kubernetes' }\n",
        "service[0].control",
        "unknown kind 'kubernetes'",
    ),
    (
        "control without kind",
        VALID_SERVICE + "control = { unit = 'x.service' }\n",
        "service[0].control",
        "missing 'kind'",
    ),
    (
        "command control without start",
        VALID_SERVICE + "control = { kind = 'command', stop = ['x'] }\n",
        "service[0].control.start",
        "required",
    ),
    (
        "unknown key in command control",
        VALID_SERVICE + "control = { kind = 'command', start = ['a'], stop = ['b'], reload = ['c'] }\n",
        "service[0].control.reload",
        "restart",
    ),
    ("empty argv", VALID_SERVICE + "alembic = { command = [] }\n", "service[0].alembic.command", "at least 1"),
    (
        "systemd unit with spaces",
        VALID_SERVICE + "control = { kind = 'systemd', unit = 'vbrpg backend' }\n",
        "service[0].control.unit",
        "systemd unit name",
    ),
    (
        "latency path relative",
        VALID_SERVICE + "probes.latency = { paths = ['api/rooms'] }\n",
        "service[0].probes.latency.paths[0]",
        "starting with '/'",
    ),
    (
        "row table not an identifier",
        VALID_SERVICE + "probes.rows = { tables = ['players; drop table x'] }\n",
        "service[0].probes.rows.tables",
        "table names",
    ),
    (
        "rule with unknown action",
        VALID_SERVICE + "[[service.rules]]\nname = 'data-loss'\naction = 'reboot'\n",
        "service[0].rules[0].action",
        "'restart'",
    ),
    (
        "rule with bad for",
        VALID_SERVICE + "[[service.rules]]\nname = 'health-failing'\nfor = 'a while'\n",
        "service[0].rules[0].for",
        "not a duration",
    ),
    (
        "duplicate rule names",
        VALID_SERVICE + "[[service.rules]]\nname = 'data-loss'\n[[service.rules]]\nname = 'data-loss'\n",
        "service[0]",
        "defined twice",
    ),
    (
        "rule with unknown signal",
        VALID_SERVICE + "[[service.rules]]\nname = 'health-failing'\nsignal = 'vibes'\n",
        "service[0].rules[0].signal",
        "'health_failing'",
    ),
    (
        "new rule without action",
        VALID_SERVICE + "[[service.rules]]\nname = 'my-rule'\nsignal = 'latency_high'\n",
        "service[0].rules[0]",
        "needs both 'signal' and 'action'",
    ),
    (
        "webhook not http",
        "[daemon]\nwebhooks = [{ url = 'ftp://x' }]\n" + VALID_SERVICE,
        "daemon.webhooks[0].url",
        "http://",
    ),
    (
        "alertmanager without scheme",
        "[[daemon.alertmanager]]\nurl = '127.0.0.1:9093'\n" + VALID_SERVICE,
        "daemon.alertmanager[0].url",
        "http://",
    ),
    (
        "smoke step bad status",
        VALID_SERVICE + "[[service.verify.smoke]]\nname = 's'\npath = '/x'\nexpect_status = [999]\n",
        "service[0].verify.smoke[0].expect_status[0]",
        "less than or equal to 599",
    ),
    (
        "min_free_ratio above 1",
        VALID_SERVICE + "backups = { min_free_ratio = 1.5 }\n",
        "service[0].backups.min_free_ratio",
        "less than 1",
    ),
]


@pytest.mark.parametrize(("text", "key", "fragment"), [case[1:] for case in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_config_names_the_key_path(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(text, tmp_path)
    keys = [problem.key for problem in raised.value.problems]
    assert key in keys, raised.value.render()
    problem = raised.value.problems[keys.index(key)]
    assert fragment in problem.message, problem.message
    assert str(tmp_path / "rollbackd.toml") in raised.value.render()


def test_every_problem_is_reported_at_once_with_lines(tmp_path: Path) -> None:
    text = VALID_SERVICE + "backups = { keep_last = 0 }\nbogus = 1\n\n[service.probes.health]\nevery = 'soon'\n"
    with pytest.raises(ConfigError) as raised:
        parse(text, tmp_path)
    by_key = {problem.key: problem for problem in raised.value.problems}
    assert set(by_key) == {"service[0].backups.keep_last", "service[0].bogus", "service[0].probes.health.every"}
    lines = text.splitlines()
    for key, problem in by_key.items():
        assert problem.line is not None
        leaf = key.rsplit(".", 1)[-1]
        assert leaf in lines[problem.line - 1], (key, problem.line)


def test_second_service_errors_point_at_its_own_lines(tmp_path: Path) -> None:
    text = VALID_SERVICE + VALID_SERVICE.replace('"vbrpg"', '"other"') + "[service.backups]\nkeep_weekly = -1\n"
    with pytest.raises(ConfigError) as raised:
        parse(text, tmp_path)
    [problem] = raised.value.problems
    assert problem.key == "service[1].backups.keep_weekly"
    assert problem.line == len(text.splitlines())


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(VALID_SERVICE + "name = \n", tmp_path)
    [problem] = raised.value.problems
    assert "not valid TOML" in problem.message
    assert problem.line == len(VALID_SERVICE.splitlines()) + 1


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.toml")


def test_relative_paths_resolve_against_config_dir_and_workdir(tmp_path: Path) -> None:
    text = """
    [daemon]
    state_dir = "state"

    [[service]]
    name = "vbrpg"
    workdir = "backend"
    database = "data/vbrpg.db"
    base_url = "http://127.0.0.1:8000/"
    alembic = { command = ["../venv/bin/alembic"] }
    control = { kind = "command", start = ["bin/start", "--db", "data/vbrpg.db"], stop = ["/bin/kill"] }
    backups = { dir = "data/backups" }
    """
    config = parse(text, tmp_path)
    service = config.service[0]  # type: ignore[attr-defined]
    assert config.daemon.state_dir == tmp_path / "state"  # type: ignore[attr-defined]
    assert service.workdir == tmp_path / "backend"
    assert service.database == tmp_path / "backend/data/vbrpg.db"
    assert service.backups.dir == tmp_path / "backend/data/backups"
    assert service.alembic.ini == tmp_path / "backend/alembic.ini"
    assert service.alembic.command == [str(tmp_path / "venv/bin/alembic")]
    assert isinstance(service.control, CommandControl)
    # Only the program is resolved; its arguments are the command's business (it runs in workdir).
    assert service.control.start == [str(tmp_path / "backend/bin/start"), "--db", "data/vbrpg.db"]
    assert service.base_url == "http://127.0.0.1:8000"


def test_durations_and_sizes_are_parsed_once(tmp_path: Path) -> None:
    text = (
        VALID_SERVICE
        + "backups = { every = '1h30m', min_free_bytes = '1GiB' }\nprobes.health = { timeout = '500ms' }\n"
    )
    service = parse(text, tmp_path).service[0]  # type: ignore[attr-defined]
    assert service.backups.every == 5400.0
    assert service.backups.min_free_bytes == 1024**3
    assert service.probes.health.timeout == 0.5


def test_systemd_unit_name_gets_its_suffix(tmp_path: Path) -> None:
    service = parse(VALID_SERVICE + "control = { kind = 'systemd', unit = 'vbrpg-backend' }\n", tmp_path).service[0]  # type: ignore[attr-defined]
    assert isinstance(service.control, SystemdControl)
    assert service.control.unit == "vbrpg-backend.service"


def test_versions_dir_comes_from_alembic_ini(tmp_path: Path) -> None:
    workdir = tmp_path / "backend"
    workdir.mkdir()
    (workdir / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    text = VALID_SERVICE.replace("/opt/vbrpg/backend", str(workdir))
    service = parse(text, tmp_path).service[0]  # type: ignore[attr-defined]
    assert service.versions_dir == workdir / "migrations" / "versions"


@pytest.mark.parametrize("name", ["rollbackd.toml", "demo.toml"])
def test_shipped_configs_load_and_print_back_unchanged(tmp_path: Path, name: str) -> None:
    config = load_config(REPO / "config" / name)
    printed = toml_dump.dumps(dump_config(config))
    reloaded = parse_config(printed, tmp_path / "printed.toml")
    assert dump_config(reloaded) == dump_config(config)


def test_config_path_precedence() -> None:
    assert resolve_config_path("/a.toml", {"ROLLBACKD_CONFIG": "/b.toml"}) == Path("/a.toml")
    assert resolve_config_path(None, {"ROLLBACKD_CONFIG": "/b.toml"}) == Path("/b.toml")
    assert resolve_config_path(None, {}) == Path("/etc/rollbackd/rollbackd.toml")


def test_alertmanagers_are_a_list_of_tables_under_daemon(tmp_path: Path) -> None:
    text = (
        "[[daemon.alertmanager]]\nurl = 'http://127.0.0.1:9093'\n"
        "[[daemon.alertmanager]]\nurl = 'https://am.example.org'\ntimeout = '2s'\nretries = 5\n" + VALID_SERVICE
    )
    config = parse(text, tmp_path)
    first, second = config.daemon.alertmanager  # type: ignore[attr-defined]
    assert (first.url, first.timeout, first.retries) == ("http://127.0.0.1:9093", 5.0, 3)
    assert (second.url, second.timeout, second.retries) == ("https://am.example.org", 2.0, 5)


def test_script_location_comes_from_pyproject_toml_when_there_is_no_alembic_ini(tmp_path: Path) -> None:
    """Alembic >= 1.16's pyproject.toml form ([tool.alembic]); reading alembic.ini by hand missed it."""
    workdir = tmp_path / "backend"
    workdir.mkdir()
    (workdir / "pyproject.toml").write_text('[tool.alembic]\nscript_location = "%(here)s/db/migrations"\n')
    text = VALID_SERVICE.replace("/opt/vbrpg/backend", str(workdir))
    service = parse(text, tmp_path).service[0]  # type: ignore[attr-defined]
    assert service.script_location == workdir / "db" / "migrations"
    assert service.versions_dir == workdir / "db" / "migrations" / "versions"


def test_alembic_ini_wins_over_pyproject_toml_as_in_alembic(tmp_path: Path) -> None:
    workdir = tmp_path / "backend"
    workdir.mkdir()
    (workdir / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    (workdir / "pyproject.toml").write_text('[tool.alembic]\nscript_location = "elsewhere"\n')
    text = VALID_SERVICE.replace("/opt/vbrpg/backend", str(workdir))
    service = parse(text, tmp_path).service[0]  # type: ignore[attr-defined]
    assert service.script_location == workdir / "migrations"


def test_without_any_alembic_file_the_default_layout_is_assumed(tmp_path: Path) -> None:
    workdir = tmp_path / "backend"
    workdir.mkdir()
    (workdir / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # a pyproject.toml without [tool.alembic]
    text = VALID_SERVICE.replace("/opt/vbrpg/backend", str(workdir))
    service = parse(text, tmp_path).service[0]  # type: ignore[attr-defined]
    assert service.script_location == workdir / "alembic"
