"""Which version of its code a service runs, and the command that goes back to one: a git commit or an image.

A full service rollback (the runbook's section 2) needs the version from before the deploy. With the code in
git that is the commit checked out in the code dir. With docker compose it is the image the service's container
runs, kept as ``image:<reference>@<image id>``: going back is `docker tag <image id> <reference>` while the
service is stopped, and the next `docker compose up` recreates the container from the old image (the runbook's
"Restore previous image version", without needing a registry to still hold it).
"""

from __future__ import annotations

import re
from pathlib import Path

from rollbackd.config.model import DockerComposeControl, ServiceConfig
from rollbackd.host.commands import run_command

IMAGE_PREFIX = "image:"
INSPECT_TIMEOUT = 30.0  # seconds for `compose ps` and `docker inspect` each
_CONTAINER_ID = re.compile(r"^[0-9a-f]{12,64}$")
_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")


class CodeVersionError(Exception):
    """A recorded code version cannot be gone back to (an image version without docker compose control)."""


def uses_images(service: ServiceConfig) -> bool:
    return isinstance(service.control, DockerComposeControl)


def read_code_version(service: ServiceConfig) -> str | None:
    """The version the service runs now, or None when it cannot be told (blocking: files or docker commands)."""
    if isinstance(service.control, DockerComposeControl):
        return running_image(service, service.control)
    return git_head(service.code_dir)


def running_image(service: ServiceConfig, control: DockerComposeControl) -> str | None:
    """``image:<reference>@<id>`` of the compose service's container, or None (not running, docker unreachable)."""
    cwd = control.project_dir or service.workdir
    listed = run_command([*compose_command(control), "ps", "-q", control.service], cwd=cwd, timeout=INSPECT_TIMEOUT)
    containers = [line for line in listed.output_tail.split() if _CONTAINER_ID.match(line)] if listed.ok else []
    if not containers:
        return None
    inspected = run_command(
        [*control.docker, "inspect", "--format", "{{.Image}} {{.Config.Image}}", containers[0]],
        cwd=cwd,
        timeout=INSPECT_TIMEOUT,
    )
    if not inspected.ok:
        return None
    for line in inspected.output_tail.splitlines():
        parts = line.split()
        if len(parts) == 2 and _IMAGE_ID.match(parts[0]):
            return f"{IMAGE_PREFIX}{parts[1]}@{parts[0]}"
    return None


def rollback_argv(service: ServiceConfig, version: str) -> list[str]:
    """The command that puts ``version`` back in place (run while the service is stopped)."""
    if version.startswith(IMAGE_PREFIX):
        if not isinstance(service.control, DockerComposeControl):
            raise CodeVersionError(f"{version} is a container image, but the service is not run by docker compose")
        reference, image_id = version.removeprefix(IMAGE_PREFIX).rsplit("@", 1)
        return [*service.control.docker, "tag", image_id, reference]
    return ["git", "-C", str(service.code_dir), "checkout", "--quiet", version]


def compose_command(control: DockerComposeControl) -> list[str]:
    """`docker compose` with the project's directory and files, before the subcommand."""
    argv = list(control.command)
    if control.project_dir is not None:
        argv += ["--project-directory", str(control.project_dir)]
    for file in control.files:
        argv += ["-f", str(file)]
    return argv


def git_head(code_dir: Path) -> str | None:
    """Read the commit checked out in ``code_dir`` from .git's files (no subprocess), or None if not a checkout."""
    git = code_dir / ".git"
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            target = git.read_text().strip().removeprefix("gitdir:").strip()
            git = (code_dir / target).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head.removeprefix("ref:").strip()
        ref_file = git / ref
        if ref_file.is_file():
            return ref_file.read_text().strip() or None
        common = git / "commondir"
        if common.is_file():
            shared = (git / common.read_text().strip()).resolve()
            if (shared / ref).is_file():
                return (shared / ref).read_text().strip() or None
            git = shared
        packed = git / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
    except OSError:
        return None
    return None
