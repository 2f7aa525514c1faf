"""Deploy windows: the minutes after a migration arrives or the revision changes, when failures undo the deploy.

The runbook's first two reasons to roll back are "migration fails during deployment" and "post-deployment health
checks fail"; outside a deploy the same failure gets a restart, never a schema change. A window opens when the
file watch sees a new migration script, when the schema probe sees the database revision change, or when
`rollbackd migrate` starts one; it records the revision and code version (git commit or container image) before
the deploy and the pre-deploy backup, which is what a rollback goes back to. Windows live in the state DB so a
daemon restart keeps them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rollbackd.config.model import ServiceConfig
from rollbackd.policy.conditions import DeployWindow
from rollbackd.state.history import DeployRecord, History
from rollbackd.target.code_version import git_head, read_code_version, uses_images

log = logging.getLogger(__name__)

IMAGE_LOOK_EVERY = 30.0  # seconds between looks at the container's image (docker commands, not git's file reads)
# A new image becomes the one to go back to only after running this long with no deploy window: compose starts
# the new container before its entrypoint migrates, and a look in between must not take the new image for good.
IMAGE_SETTLE = 60.0


class DeployTracker:
    def __init__(self, service: ServiceConfig, history: History, clock: Callable[[], float]) -> None:
        self.service = service
        self.history = history
        self.clock = clock
        # The code version to go back to; an image is first read at the first schema reading, in a worker thread
        # (docker commands), never here on the event loop.
        self.stable_version = None if uses_images(service) else git_head(service.code_dir)
        self._changing_since: float | None = None
        self._expected: set[str] = set()
        self._image_looked_at: float | None = None
        self._new_image: tuple[str, float] | None = None  # (version, first seen) while it settles

    def window(self) -> DeployWindow | None:
        record = self.history.open_deploy_window(self.service.name)
        return None if record is None else _window(record)

    def code_changing(self) -> None:
        """The code dir is changing now (called from the file watch's thread): a deploy may be under way, so the
        commit checked out from now on is not the one to go back to, until it has stood for a deploy window."""
        self._changing_since = self.clock()

    def note_code_version(self, window_open: bool) -> None:
        """Remember the code version while no deploy is under way: a code rollback goes back to it (blocking)."""
        now = self.clock()
        if window_open:
            self._new_image = None
            return
        if self._changing_since is not None and now - self._changing_since < self.service.deploy.window:
            return
        if not uses_images(self.service):
            self._remember(git_head(self.service.code_dir) or self.stable_version)
            return
        if self._image_looked_at is not None and now - self._image_looked_at < IMAGE_LOOK_EVERY:
            return
        self._image_looked_at = now
        image = read_code_version(self.service)
        if image is None or image == self.stable_version:
            self._new_image = None
        elif self.stable_version is None:  # the first look: what runs as rollbackd starts is what it knows
            self._remember(image)
        elif self._new_image is None or self._new_image[0] != image:
            self._new_image = (image, now)
        elif now - self._new_image[1] >= IMAGE_SETTLE:
            self._new_image = None
            self._remember(image)

    def _remember(self, version: str | None) -> None:
        if version != self.stable_version:
            log.info(
                "%s: code version to go back to: %s",
                self.service.name,
                version,
                extra={"service": self.service.name},
            )
        self.stable_version = version

    def expect_revision(self, revision: str | None) -> None:
        """rollbackd itself is about to move the database to ``revision``: that change is not a deploy."""
        if revision:
            self._expected.add(revision)

    def migration_arrived(
        self, revisions: list[str], current_revision: str | None, schema_fingerprint: str | None
    ) -> DeployWindow:
        """A new migration script appeared: open (or extend) the window before the revision changes."""
        open_window = self.history.open_deploy_window(self.service.name)
        if open_window is not None:
            self.history.update_deploy(
                open_window.id,
                closes_at=self.clock() + self.service.deploy.window,
                detail={**open_window.detail, "arrived": sorted({*open_window.detail.get("arrived", []), *revisions})},
            )
            return self._current(open_window.id)
        deploy_id = self.history.open_deploy(
            self.service.name,
            "migration_arrived",
            self.service.deploy.window,
            from_revision=current_revision,
            code_commit=self.stable_version,
            detail={"arrived": sorted(revisions), "schema_fingerprint": schema_fingerprint},
        )
        log.info(
            "%s: deploy window opened: migration %s arrived (database at %s)",
            self.service.name,
            ", ".join(revisions),
            current_revision,
            extra={"service": self.service.name},
        )
        return self._current(deploy_id)

    def consume_expected(self, revision: str | None) -> bool:
        """True (once) when rollbackd itself announced moving the database to ``revision``."""
        if revision in self._expected:
            self._expected.discard(revision)
            return True
        return False

    def revision_changed(self, old: str | None, new: str | None, schema_fingerprint: str | None) -> DeployWindow:
        """The database revision moved without rollbackd: return the deploy window it belongs to."""
        open_window = self.history.open_deploy_window(self.service.name)
        if open_window is not None:
            self.history.update_deploy(open_window.id, to_revision=new)
            return self._current(open_window.id)
        deploy_id = self.history.open_deploy(
            self.service.name,
            "revision_change",
            self.service.deploy.window,
            from_revision=old,
            code_commit=self.stable_version,
            detail={"schema_fingerprint": schema_fingerprint},
        )
        self.history.update_deploy(deploy_id, to_revision=new)
        log.info(
            "%s: deploy window opened: revision %s → %s",
            self.service.name,
            old,
            new,
            extra={"service": self.service.name},
        )
        return self._current(deploy_id)

    def _current(self, deploy_id: int) -> DeployWindow:
        for record in self.history.deploys(self.service.name, limit=5):
            if record.id == deploy_id:
                return _window(record)
        raise LookupError(f"deploy {deploy_id} vanished from the state DB")


def _window(record: DeployRecord) -> DeployWindow:
    return DeployWindow(
        deploy_id=record.id,
        opened_at=record.opened_at,
        closes_at=record.closes_at,
        trigger=record.trigger,
        from_revision=record.from_revision,
        pre_deploy_backup=record.pre_deploy_backup,
        code_commit=record.code_commit,
        schema_fingerprint=record.detail.get("schema_fingerprint"),
    )
