"""The backups on disk: their names, which ones are verified, and choosing one to restore.

Only a file named ``<stem>_backup_YYYYMMDD_HHMMSS[_N].db`` inside the backup dir, with a valid manifest whose
size (and mtime, or on demand sha256) still matches and whose last drill did not fail, is *verified*. Everything
else is reported as unverified and is never chosen for a restore nor deleted automatically.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from rollbackd.backup.manifest import (
    MANIFEST_SUFFIX,
    BackupManifest,
    ManifestError,
    read_manifest,
    write_manifest,
)
from rollbackd.host.atomic_files import file_sha256

TIMESTAMP_FORMAT = "%Y%m%d_%H%M%S"
PARTIAL_SUFFIX = ".partial"

Status = Literal["verified", "unverified"]


class BackupRefused(Exception):
    """A backup that must not be restored: outside the backup dir, not a backup name, unverified, corrupt."""


class NoBackup(Exception):
    """No verified backup matches the request."""


@dataclass(frozen=True)
class BackupEntry:
    name: str
    path: Path
    created_at: float
    size_bytes: int
    manifest: BackupManifest | None
    status: Status
    problem: str = ""  # why it is unverified ("" when verified)

    @property
    def verified(self) -> bool:
        return self.status == "verified"

    @property
    def revision(self) -> str | None:
        return self.manifest.revision if self.manifest else None

    @property
    def reason(self) -> str | None:
        return self.manifest.reason if self.manifest else None


@dataclass(frozen=True)
class BackupListing:
    """Backups oldest first, plus debris a prune may clear: manifests whose backup is gone, stale temp files."""

    backups: tuple[BackupEntry, ...]
    orphan_manifests: tuple[Path, ...] = ()
    partials: tuple[Path, ...] = ()

    @property
    def verified(self) -> list[BackupEntry]:
        return [entry for entry in self.backups if entry.verified]

    @property
    def unverified(self) -> list[BackupEntry]:
        return [entry for entry in self.backups if not entry.verified]

    def newest_verified(self) -> BackupEntry | None:
        verified = self.verified
        return verified[-1] if verified else None


def backup_pattern(stem: str) -> re.Pattern[str]:
    # \Z, not $: "$" also matches before a trailing newline, and "x.db\n" is not a backup's name.
    return re.compile(rf"\A{re.escape(stem)}_backup_(\d{{8}}_\d{{6}})(?:_(\d+))?\.db\Z")


def backup_name(stem: str, moment: float, sequence: int = 0) -> str:
    """``vbrpg_backup_20250109_143022.db`` (UTC), ``…_1.db`` for the second one in the same second."""
    stamp = datetime.fromtimestamp(moment, UTC).strftime(TIMESTAMP_FORMAT)
    suffix = f"_{sequence}" if sequence else ""
    return f"{stem}_backup_{stamp}{suffix}.db"


def timestamp_of(name: str, stem: str) -> float | None:
    """The UTC time in a backup's name, or None when the name is not a backup name for ``stem``."""
    match = backup_pattern(stem).match(name)
    if not match:
        return None
    return datetime.strptime(match.group(1), TIMESTAMP_FORMAT).replace(tzinfo=UTC).timestamp()


def parse_moment(text: str) -> float:
    """Given ``YYYYMMDD_HHMMSS`` or an ISO 8601 time (UTC when no offset), return Unix time. Raise ValueError."""
    try:
        moment = datetime.strptime(text, TIMESTAMP_FORMAT)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"expected YYYYMMDD_HHMMSS or an ISO 8601 time, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def list_backups(backup_dir: Path, stem: str, *, verify: bool = False) -> BackupListing:
    """Return the backups of ``stem`` in ``backup_dir`` oldest first. With ``verify``, check every sha256 and
    open every copy with SQLite (``quick_check``).

    A missing dir is an empty listing. Raise OSError when the dir exists but cannot be read.
    """
    if not backup_dir.is_dir():
        return BackupListing(())
    pattern = backup_pattern(stem)
    backups: list[BackupEntry] = []
    names = set(os.listdir(backup_dir))
    for name in names:
        if pattern.match(name):
            backups.append(inspect_backup(backup_dir / name, stem, verify=verify, open_check=verify))
    orphans = []
    for name in names:
        described = name[: -len(MANIFEST_SUFFIX)]
        if name.endswith(MANIFEST_SUFFIX) and pattern.match(described) and described not in names:
            orphans.append(backup_dir / name)
    partials = [backup_dir / name for name in names if name.startswith(f".{stem}_backup_") and PARTIAL_SUFFIX in name]
    backups.sort(key=lambda entry: (entry.created_at, entry.name))
    return BackupListing(tuple(backups), tuple(sorted(orphans)), tuple(sorted(partials)))


def inspect_backup(path: Path, stem: str, *, verify: bool = False, open_check: bool = False) -> BackupEntry:
    """Describe one backup file: verified only if everything known about it still holds. ``verify`` checks the
    sha256; ``open_check`` also opens the copy with SQLite and runs ``quick_check``: a manifest can be forged to
    match any file's sha256, only SQLite can say the file is a database (restore checks it the same way)."""
    named_at = timestamp_of(path.name, stem) or 0.0
    try:
        info = path.lstat()
    except OSError as error:
        return BackupEntry(path.name, path, named_at, 0, None, "unverified", f"cannot stat: {error.strerror}")
    if not stat.S_ISREG(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        return BackupEntry(path.name, path, named_at, 0, None, "unverified", kind)
    try:
        manifest = read_manifest(path)
    except ManifestError as error:
        return BackupEntry(path.name, path, named_at, info.st_size, None, "unverified", str(error))
    entry = BackupEntry(path.name, path, manifest.created_at, info.st_size, manifest, "verified")
    problem = ""
    if info.st_size != manifest.size_bytes:
        problem = f"size {info.st_size} differs from the manifest's {manifest.size_bytes}"
    elif verify:
        actual = file_sha256(path)
        if actual != manifest.sha256:
            problem = "sha256 differs from the manifest (the file changed after it was taken)"
        elif open_check:
            problem = sqlite_problem(path)
    elif info.st_mtime_ns != manifest.mtime_ns:
        problem = "modified since it was taken (run `rollbackd backups verify` to check its sha256)"
    if not problem and manifest.drill_failed and manifest.drill is not None:
        problem = f"failed its restore drill: {manifest.drill.detail}"
    if problem:
        return replace(entry, status="unverified", problem=problem)
    return entry


def verify_backup(entry: BackupEntry) -> BackupEntry:
    """Check ``entry``'s sha256 against its manifest and open it with SQLite (quick_check); when the bytes match
    but the mtime moved (a ``touch``, a copy that kept the bytes), record the new mtime so the cheap check trusts
    it again."""
    checked = inspect_backup(entry.path, _stem_of(entry.name), verify=True, open_check=True)
    manifest = checked.manifest
    if checked.verified and manifest is not None:
        mtime_ns = entry.path.stat().st_mtime_ns
        if mtime_ns != manifest.mtime_ns:
            write_manifest(entry.path, replace(manifest, mtime_ns=mtime_ns))
            checked = replace(checked, manifest=replace(manifest, mtime_ns=mtime_ns))
    return checked


def sqlite_problem(path: Path) -> str:
    """'' when SQLite opens ``path`` read-only and ``PRAGMA quick_check`` says ok, else what it said."""
    try:
        connection = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
        with contextlib.closing(connection):
            rows = connection.execute("PRAGMA quick_check").fetchmany(3)
    except sqlite3.Error as error:
        return f"SQLite cannot read it: {error}"
    if [tuple(row) for row in rows] != [("ok",)]:
        return "quick_check: " + "; ".join(str(row[0]) for row in rows)
    return ""


def _stem_of(name: str) -> str:
    return name.rsplit("_backup_", 1)[0]


def resolve_backup_name(backup_dir: Path, name: str, stem: str) -> Path:
    """Given a backup's file name, return its path inside ``backup_dir``.

    Raise BackupRefused for a name with a path in it, a symlink that leads out of the dir, or a name that is not
    a backup's. Nothing outside the configured backup dir is ever restored.
    """
    if not name or "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
        raise BackupRefused(f"refusing {name!r}: a backup is named by its file name in {backup_dir}, without any path")
    root = backup_dir.resolve()
    candidate = backup_dir / name
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root) or resolved.parent != root:
        raise BackupRefused(f"refusing {name!r}: it is a symbolic link that leads out of {backup_dir} (to {resolved})")
    if not backup_pattern(stem).match(name):
        raise BackupRefused(f"refusing {name!r}: not a backup name (expected {stem}_backup_YYYYMMDD_HHMMSS.db)")
    if not candidate.exists():
        raise NoBackup(f"no backup named {name!r} in {backup_dir}")
    return candidate


def choose_backup(
    listing: BackupListing,
    *,
    name: str | None = None,
    before: float | None = None,
    revision: str | None = None,
) -> BackupEntry:
    """Pick the backup to restore: by name, the newest before a time, the newest of a revision, or the newest.

    Only verified backups are ever chosen. Raise BackupRefused when the named one is unverified, NoBackup when
    nothing matches.
    """
    if name is not None:
        for entry in listing.backups:
            if entry.name == name:
                if not entry.verified:
                    raise BackupRefused(f"refusing {name}: unverified ({entry.problem})")
                return entry
        raise NoBackup(f"no backup named {name!r}")
    candidates: Sequence[BackupEntry] = listing.verified
    wanted = []
    if before is not None:
        candidates = [entry for entry in candidates if entry.created_at < before]
        wanted.append(f"taken before {datetime.fromtimestamp(before, UTC).isoformat()}")
    if revision is not None:
        candidates = [entry for entry in candidates if entry.revision == revision]
        wanted.append(f"of revision {revision}")
    if not candidates:
        what = " ".join(wanted)
        skipped = len(listing.unverified)
        note = f" ({skipped} unverified backup(s) ignored)" if skipped else ""
        raise NoBackup(f"no verified backup{' ' + what if what else ''}{note}")
    return candidates[-1]
