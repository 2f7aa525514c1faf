"""Refresh packaging/requirements.lock: every distribution the .deb bundles, pinned, with its sha256.

    .venv/bin/python packaging/lock.py                 resolves for /usr/bin/python3 (the package's target)
    .venv/bin/python packaging/lock.py --python /usr/bin/python3.11

pip resolves rollbackd[systemd] from this checkout for the target interpreter without installing anything
(`pip install --dry-run --report`) and the report names the exact file of each distribution and its hash.
build-deb.sh installs exactly those with `--require-hashes --no-cache-dir`, so a build bundles what was locked,
not whatever the index serves that day; a changed dependency in pyproject.toml fails the build's `pip check`
until the lock is refreshed here. The hash is of the file pip picked from the configured indexes: a machine
whose index serves another build of the same version fails the build loudly (refresh the lock there).
"""

# ruff: noqa: S603  (fixed argv lists: this interpreter's pip and the target interpreter the user names)
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOCK = HERE / "requirements.lock"
NO_BINARY = "systemd-python"  # no wheel on PyPI; built in the package build with the target's Python


def resolve(target_python: str) -> list[tuple[str, str, str]]:
    """Return (name, version, sha256) of every distribution rollbackd[systemd] needs, rollbackd itself excluded."""
    with tempfile.TemporaryDirectory() as scratch:
        venv = Path(scratch) / "venv"
        subprocess.run([target_python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        report = Path(scratch) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "--quiet", "--dry-run",
             "--ignore-installed", "--no-cache-dir", "--no-binary", NO_BINARY, "--report", str(report),
             f"{REPO}[systemd]"],
            check=True,
            timeout=900,
        )  # fmt: skip
        installs = json.loads(report.read_text())["install"]
    pinned = []
    for item in installs:
        name = item["metadata"]["name"]
        if name == "rollbackd":
            continue
        sha256 = item["download_info"]["archive_info"]["hashes"]["sha256"]
        pinned.append((name, item["metadata"]["version"], sha256))
    return sorted(pinned, key=lambda entry: entry[0].lower())


def render(pinned: list[tuple[str, str, str]], target_python: str) -> str:
    version = subprocess.run(
        [target_python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    lines = [
        "# What the rollbackd .deb bundles in /opt/rollbackd, with hashes (pip --require-hashes).",
        f"# Resolved for Python {version} by packaging/lock.py; refresh with: .venv/bin/python packaging/lock.py",
    ]
    for name, version_pin, sha256 in pinned:
        lines.append(f"{name}=={version_pin} \\\n    --hash=sha256:{sha256}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="refresh packaging/requirements.lock")
    parser.add_argument("--python", default="/usr/bin/python3", help="the target interpreter (default: %(default)s)")
    args = parser.parse_args()
    LOCK.write_text(render(resolve(args.python), args.python))
    print(f"wrote {LOCK}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
