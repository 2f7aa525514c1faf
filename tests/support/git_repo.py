"""git as a deploy uses it, for tests whose service code lives in a real checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

IDENTITY = {
    "GIT_AUTHOR_NAME": "deploy",
    "GIT_AUTHOR_EMAIL": "deploy@example.org",
    "GIT_COMMITTER_NAME": "deploy",
    "GIT_COMMITTER_EMAIL": "deploy@example.org",
    "PATH": "/usr/bin:/bin",
}


def git(workdir: Path, *arguments: str) -> str:
    """Run `git -C WORKDIR ARGUMENTS...` and return its stdout, stripped; fail the test on a non-zero exit."""
    result = subprocess.run(
        ["git", "-C", str(workdir), *arguments], capture_output=True, text=True, check=True, env=IDENTITY
    )
    return result.stdout.strip()


def commit_all(workdir: Path, message: str) -> str:
    """Stage everything, commit it, and return the new commit."""
    git(workdir, "add", "-A")
    git(workdir, "commit", "--quiet", "-m", message)
    return git(workdir, "rev-parse", "HEAD")
