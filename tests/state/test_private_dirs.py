"""rollbackd's state tree is owner-only (directories 0700, the status socket 0600) whoever makes it, the daemon or a
CLI command, and the daemon never changes the process umask to get there.

Run as a non-root user (``nobody``, through ``setpriv``) with the usual umask 022, in a fresh tmp dir it owns: as
root a wrong mode goes unnoticed (root passes every permission check), and a vault dir of mode 0600, as the umask
race left it, fails only for a real user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.probes.example_app import VbrpgApp
from tests.support.rollbackd_config import daemon_toml, service_toml
from tests.support.rollbackd_daemon import wait_for
from tests.support.vbrpg_service import free_port

NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
USUAL_UMASK = 0o022

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to run a command as nobody (setpriv)"
)


@pytest.fixture
def nobody_root() -> Iterator[Path]:
    """A tmp dir outside pytest's root-only tmp tree, owned by nobody."""
    root = Path(tempfile.mkdtemp(prefix="rollbackd-nobody-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_nobody(*arguments: str, **options: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - fixed argv, this interpreter
        [*NOBODY, sys.executable, "-m", "rollbackd", *arguments],
        stdin=subprocess.DEVNULL,
        umask=USUAL_UMASK,
        **options,  # type: ignore[call-overload]
    )


def chown_tree(root: Path) -> None:
    nobody = 65534
    for folder, directories, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, entry) for entry in directories + files)]:
            os.lchown(name, nobody, nobody)


def modes(state: Path) -> dict[str, int]:
    """Every directory of the state tree (and the socket) with its permission bits."""
    found = {".": stat.S_IMODE(state.stat().st_mode)}
    for path in state.rglob("*"):
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode) or stat.S_ISSOCK(info.st_mode):
            found[str(path.relative_to(state))] = stat.S_IMODE(info.st_mode)
    return found


def test_state_dirs_are_0700_and_the_socket_0600_whoever_makes_them(nobody_root: Path) -> None:
    app = VbrpgApp(nobody_root / "vbrpg").create()
    state = nobody_root / "state"
    config = nobody_root / "rollbackd.toml"
    metrics_port = free_port()
    config.write_text(daemon_toml(state, metrics_port) + service_toml(app, "vbrpg", every="200ms"))
    chown_tree(nobody_root)

    # CLI commands first, on no state dir at all: each makes the part of the tree it needs (a backup its lock
    # dir, a drill its scratch dir, a rollback the rest).
    for command in (["backup", "vbrpg"], ["backups", "drill", "vbrpg"], ["rollback", "--steps", "1", "--dry-run"]):
        result = subprocess.run(  # noqa: S603 - fixed argv, this interpreter
            [*NOBODY, sys.executable, "-m", "rollbackd", "--config", str(config), *command],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            umask=USUAL_UMASK,
        )
        assert result.returncode == 0, (command, result.stdout + result.stderr)
    made_by_cli = modes(state)
    assert {"locks", "vault", "services", "scratch"} <= set(made_by_cli)
    assert made_by_cli == dict.fromkeys(made_by_cli, 0o700)
    (state / "services").chmod(0o755)  # as an earlier version's CLI left it: the daemon repairs it

    # Then the daemon, as the same user: vault/<service> (written by probe threads while the socket is set up)
    # and services/<service> are 0700, the socket 0600.
    log = (nobody_root / "daemon.log").open("wb")
    daemon = as_nobody("--config", str(config), "run", stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        socket = state / "rollbackd.sock"
        wait_for(lambda: socket.exists() and list((state / "vault" / "vbrpg").glob("*.py")), "the socket and vault")
        found = modes(state)
        assert found.pop("rollbackd.sock") == 0o600
        assert socket.stat().st_uid == 65534
        assert {"vault/vbrpg", "services/vbrpg"} <= set(found)
        assert found == dict.fromkeys(found, 0o700), found
        assert not [path.name for path in state.glob(".s*")]  # the private bind dir is gone
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
        log.close()
    text = (nobody_root / "daemon.log").read_text()
    assert "Permission denied" not in text and "Traceback" not in text, text[-3000:]
