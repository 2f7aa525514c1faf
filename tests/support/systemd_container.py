"""A real systemd to run rollbackd's unit under: a Debian 12 root made by mmdebstrap, booted by systemd-nspawn.

PID 1 of this machine is not systemd, so `Type=notify`, `WatchdogSec=`, `ExecReload=`, the sandbox and the
polkit rule can only be proved inside a container that boots one. The root is made once and cached between
sessions under ``/var/cache/rollbackd-tests/<key>/root`` (``$ROLLBACKD_TEST_CACHE`` moves it), the key being a
hash of the Debian packages it is made from; each session boots a copy of it (the cached root stays pristine),
with its own machine name and a private network (only loopback: nothing it binds meets the host's ports), drives
it with nsenter, and stops it by the nspawn process's own pid.

The root keeps apt's lists and the .debs of ``DOWNLOADED_ONLY`` (downloaded, not installed), so
`apt-get install ./rollbackd_*.deb` resolves the package's dependencies offline, as it would from a mirror.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
VARIANT = "minbase"
# What the root is made of: systemd with D-Bus and polkit, the Python the .deb is built against, and the
# tools a test reads the service with. Not procps: the package must bring it (ExecReload= uses /bin/kill).
ROOT_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-venv",
    "polkitd",
    "sqlite3",
    "curl",
    "adduser",
    "libsystemd0",
)
# Downloaded into the root's apt cache but not installed: what rollbackd's package depends on beyond the above.
DOWNLOADED_ONLY = ("procps",)
# The Debian packages that provide the host tools this harness needs.
HOST_TOOLS = {"systemd-nspawn": "systemd-container", "mmdebstrap": "mmdebstrap", "nsenter": "util-linux"}
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")

MAKE_ROOT_TIMEOUT_SECONDS = 600.0
BOOT_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 10.0  # a clean halt takes seconds; the root is thrown away anyway
COMMAND_TIMEOUT_SECONDS = 120.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def missing_host_tools() -> list[str]:
    """Return the Debian packages to install for the tools this harness needs, or [] when all are there."""
    return sorted({package for tool, package in HOST_TOOLS.items() if shutil.which(tool) is None})


def cache_root() -> Path:
    return Path(os.environ.get("ROLLBACKD_TEST_CACHE", "/var/cache/rollbackd-tests"))


def root_key() -> str:
    """A name for the root that changes whenever what it is made of changes."""
    recipe = {"suite": SUITE, "variant": VARIANT, "packages": ROOT_PACKAGES, "downloaded": DOWNLOADED_ONLY}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def cached_root() -> Path:
    """Return the cached root for ``root_key()``, making it with mmdebstrap first if it is not there.

    A lock file serialises concurrent sessions; the root is made under a temporary name and renamed into place,
    so an interrupted run leaves nothing that looks complete. Raise subprocess.CalledProcessError if mmdebstrap
    fails (its output is in the error).
    """
    folder = cache_root() / root_key()
    root = folder / "root"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root.is_dir():
            return root
        partial = folder / f"root.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        download = " ".join(DOWNLOADED_ONLY)
        try:
            subprocess.run(
                [
                    "mmdebstrap",
                    f"--variant={VARIANT}",
                    f"--include={','.join(ROOT_PACKAGES)}",
                    # keep apt's lists and cache: the offline install of the .deb resolves its dependencies there
                    "--skip=cleanup/apt",
                    f'--customize-hook=chroot "$1" apt-get install --download-only -y -q {download}',
                    SUITE,
                    str(partial),
                    str(APT_SOURCES),
                ],
                capture_output=True,
                text=True,
                timeout=MAKE_ROOT_TIMEOUT_SECONDS,
                check=True,
            )
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(root)
        return root


def _container_init_pid(nspawn_pid: int) -> int | None:
    """The pid (in our namespace) of the container's PID 1 once it runs systemd: a child of nspawn whose own pid
    inside is 1 (before its exec of systemd, systemctl would find the container "offline")."""
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{nspawn_pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                status = Path(f"/proc/{child}/status").read_text()
                nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
                comm = Path(f"/proc/{child}/comm").read_text().strip()
                if len(nspid) >= 2 and nspid[-1] == "1" and comm == "systemd":
                    return int(child)
    return None


@dataclass
class Container:
    """A booted systemd-nspawn container: its machine name, its root on the host, and the two pids that matter."""

    name: str
    root: Path
    nspawn: subprocess.Popen[bytes]
    init_pid: int
    console_log: Path

    def run(
        self, *argv: str, timeout: float = COMMAND_TIMEOUT_SECONDS, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the container (all its namespaces, as root) and return it, whatever its exit code."""
        return subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-a", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            env={"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
            check=False,
        )

    def check(self, *argv: str, timeout: float = COMMAND_TIMEOUT_SECONDS) -> str:
        """Run ``argv`` inside and return its stdout; raise AssertionError with its output if it fails."""
        result = self.run(*argv, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"{argv} exited {result.returncode}: {result.stdout}{result.stderr}")
        return result.stdout

    def path(self, inside: str) -> Path:
        """The host path of ``inside`` (the container's root is a plain directory on the host)."""
        return self.root / inside.lstrip("/")

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """``systemctl show -p ...`` of ``unit`` as a dict."""
        output = self.check("systemctl", "show", unit, *(f"--property={name}" for name in properties))
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def stop(self) -> None:
        """Power it off (SIGTERM to nspawn asks the container's systemd to shut down); if that hangs, SIGKILL
        the container's PID 1, which ends every process of its PID namespace (a SIGKILL of nspawn alone would
        leave the container running, reparented to the host's PID 1)."""
        _stop(self.nspawn, self.init_pid)


def _stop(nspawn: subprocess.Popen[bytes], init_pid: int | None) -> None:
    if nspawn.poll() is None:
        nspawn.send_signal(signal.SIGTERM)
        try:
            nspawn.wait(timeout=STOP_TIMEOUT_SECONDS)
            return
        except subprocess.TimeoutExpired:
            pass
    if init_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init_pid, signal.SIGKILL)
    try:
        nspawn.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        nspawn.kill()
        nspawn.wait()


def _terminate_with_parent() -> None:
    """In nspawn before its exec: SIGTERM when the test process dies (killed, not just failed), so that even
    then the container powers off instead of living on beside the host."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def booted_container(name: str, workdir: Path) -> Iterator[Container]:
    """Boot a copy of the cached root in ``workdir`` as machine ``name``; stop it and delete the copy afterwards.

    Returns once `systemctl is-system-running --wait` has answered (``running``, or ``degraded`` when a unit
    the minimal root cannot run failed: the caller asserts what it needs). Raise AssertionError with the
    console's output when the boot fails or takes longer than BOOT_TIMEOUT_SECONDS.
    """
    source = cached_root()
    root = workdir / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(root)], check=True, timeout=300)
    console_log = workdir / "console.log"
    with console_log.open("wb") as console:
        nspawn = subprocess.Popen(
            [
                "systemd-nspawn",
                f"--directory={root}",
                f"--machine={name}",
                "--register=no",  # the host has no systemd-machined (PID 1 is not systemd)
                "--keep-unit",
                "--private-network",
                "--boot",
                "--console=pipe",
            ],
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    init_pid: int | None = None
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT_SECONDS
        init_pid = _container_init_pid(nspawn.pid)
        # Tests may poll: nspawn gives no event for "systemd listens on its private socket" (systemctl's way in).
        while init_pid is None or not Path(f"/proc/{init_pid}/root/run/systemd/private").exists():
            if nspawn.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"systemd-nspawn did not boot:\n{console_log.read_text(errors='replace')}")
            time.sleep(0.1)
            if init_pid is None:
                init_pid = _container_init_pid(nspawn.pid)
        container = Container(name, root, nspawn, init_pid, console_log)
        state = container.run("systemctl", "is-system-running", "--wait", timeout=BOOT_TIMEOUT_SECONDS)
        if state.stdout.strip() not in ("running", "degraded"):
            raise AssertionError(
                f"boot ended {state.stdout!r} {state.stderr!r}:\n{console_log.read_text(errors='replace')}"
            )
        yield container
    finally:
        _stop(nspawn, init_pid)
        shutil.rmtree(root, ignore_errors=True)


def new_workdir() -> Path:
    """A folder for the container's copy of the root, beside the cache (same file system: a reflink copy)."""
    cache_root().mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="boot-", dir=cache_root()))
