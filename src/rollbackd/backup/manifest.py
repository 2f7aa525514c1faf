"""The manifest beside each backup (``<backup>.db.json``): what the copy holds and how it was proven.

A backup is only as good as what is known about it. The manifest records the revision, row counts, indexes and
schema fingerprint read from the copy itself, the bytes' size and sha256, how and why it was taken, and later
the result of each restore drill. A backup without a valid manifest is never chosen for a restore.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rollbackd.host.atomic_files import write_bytes_atomic

MANIFEST_FORMAT = 1
MANIFEST_SUFFIX = ".json"
# replica: a point-in-time copy restored from the Litestream replica and verified (replication/restore.py)
REASONS = ("scheduled", "pre-deploy", "pre-restore", "manual", "startup", "replica")


class ManifestError(Exception):
    """The manifest is missing, unreadable or not one rollbackd wrote."""


@dataclass(frozen=True)
class DrillResult:
    at: float
    ok: bool
    detail: str


@dataclass(frozen=True)
class BackupManifest:
    name: str
    source: str
    reason: str
    created_at: float
    duration_seconds: float
    method: str
    check: str  # the check the copy passed when taken: "quick_check" or "integrity_check"
    rollbackd_version: str
    revision: str | None
    row_counts: dict[str, int | None]
    indexes: tuple[str, ...]
    schema_fingerprint: str
    size_bytes: int
    mtime_ns: int
    sha256: str
    page_count: int
    page_size: int
    journal_mode: str
    drill: DrillResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drill_failed(self) -> bool:
        return self.drill is not None and not self.drill.ok

    def with_drill(self, drill: DrillResult) -> BackupManifest:
        return replace(self, drill=drill)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = MANIFEST_FORMAT
        data["created_at"] = _iso(self.created_at)
        data["indexes"] = list(self.indexes)
        if self.drill is not None:
            data["drill"] = {"at": _iso(self.drill.at), "ok": self.drill.ok, "detail": self.drill.detail}
        return data

    @classmethod
    def from_json(cls, data: Any) -> BackupManifest:
        """Build a manifest from parsed JSON. Raise ManifestError when a field is missing or of the wrong type."""
        try:
            if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
                raise ManifestError(f"not a rollbackd manifest (format {MANIFEST_FORMAT})")
            drill = data.get("drill")
            counts = data["row_counts"]
            if not isinstance(counts, dict) or not all(
                isinstance(value, int | None) and not isinstance(value, bool) for value in counts.values()
            ):
                raise ManifestError("row_counts must map tables to counts")
            manifest = cls(
                name=_typed(data, "name", str),
                source=_typed(data, "source", str),
                reason=_typed(data, "reason", str),
                created_at=_parse_iso(_typed(data, "created_at", str)),
                duration_seconds=float(_typed(data, "duration_seconds", (int, float))),
                method=_typed(data, "method", str),
                check=_typed(data, "check", str),
                rollbackd_version=_typed(data, "rollbackd_version", str),
                revision=data["revision"] if isinstance(data.get("revision"), str) else None,
                row_counts={str(key): value for key, value in counts.items()},
                indexes=tuple(str(name) for name in _typed(data, "indexes", list)),
                schema_fingerprint=_typed(data, "schema_fingerprint", str),
                size_bytes=_typed(data, "size_bytes", int),
                mtime_ns=_typed(data, "mtime_ns", int),
                sha256=_typed(data, "sha256", str),
                page_count=_typed(data, "page_count", int),
                page_size=_typed(data, "page_size", int),
                journal_mode=_typed(data, "journal_mode", str),
                drill=(
                    DrillResult(
                        at=_parse_iso(_typed(drill, "at", str)),
                        ok=_typed(drill, "ok", bool),
                        detail=_typed(drill, "detail", str),
                    )
                    if isinstance(drill, dict)
                    else None
                ),
                extra=dict(data["extra"]) if isinstance(data.get("extra"), dict) else {},
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ManifestError(f"invalid manifest: {error}") from error
        if manifest.reason not in REASONS:
            raise ManifestError(f"invalid manifest: unknown reason {manifest.reason!r}")
        return manifest


def manifest_path(backup: Path) -> Path:
    return backup.with_name(backup.name + MANIFEST_SUFFIX)


def read_manifest(backup: Path) -> BackupManifest:
    """Return the manifest beside ``backup``. Raise ManifestError when it is missing or invalid."""
    path = manifest_path(backup)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ManifestError(f"no manifest {path.name}") from error
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ManifestError(f"unreadable manifest {path.name}: {error}") from error
    manifest = BackupManifest.from_json(data)
    if manifest.name != backup.name:
        raise ManifestError(f"manifest {path.name} describes {manifest.name!r}, not {backup.name!r}")
    return manifest


def write_manifest(backup: Path, manifest: BackupManifest) -> None:
    """Write the manifest beside ``backup`` atomically, mode 0600. Raise OSError."""
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(manifest_path(backup), text.encode("utf-8"))


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _parse_iso(text: str) -> float:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _typed(data: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    value = data[key]
    if isinstance(value, bool) and kind is not bool:
        raise TypeError(f"{key} must not be a boolean")
    if not isinstance(value, kind):
        raise TypeError(f"{key} has the wrong type ({type(value).__name__})")
    return value
