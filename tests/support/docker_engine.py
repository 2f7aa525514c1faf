"""A private Docker engine for tests that run a service under docker compose, started and removed by the test.

`dockerd` on its own socket, with data and exec roots in a fresh temp dir, vfs storage (no overlay mounts needed)
and no iptables or bridge: the containers use the host's network, as a single-host compose deployment of a small
service often does. Images are imported from tarballs built here, so nothing is pulled from a registry. When the
Debian packages are missing the test is skipped, naming them (`.ci/run` installs them).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGES = "docker.io docker-compose"
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class DockerEngine:
    root: Path
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def docker(self, *arguments: str, stdin: bytes | None = None) -> str:
        result = subprocess.run(
            ["docker", *arguments], input=stdin, capture_output=True, env=self.env, timeout=180, check=False
        )
        if result.returncode != 0:
            raise AssertionError(f"docker {' '.join(arguments)}: {result.stderr.decode(errors='replace')}")
        return result.stdout.decode().strip()

    def import_image(self, reference: str, files: Mapping[str, str]) -> str:
        """An image whose only layer holds ``files`` (name -> text); return its id (sha256:...)."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for name, text in files.items():
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        self.docker("import", "-", reference, stdin=buffer.getvalue())
        return self.docker("image", "inspect", "--format", "{{.Id}}", reference)

    def log_tail(self) -> str:
        log = self.root / "dockerd.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else ""


@contextlib.contextmanager
def docker_engine() -> Iterator[DockerEngine]:
    missing = [tool for tool in ("dockerd", "docker", "docker-compose") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install {PACKAGES})")
    root = Path(tempfile.mkdtemp(prefix="rbd-dockerd-", dir="/tmp"))  # short: containerd's socket paths live here
    log = (root / "dockerd.log").open("wb")
    process = subprocess.Popen(
        [
            "dockerd",
            "--host",
            f"unix://{root / 'docker.sock'}",
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "dockerd.pid"),
            "--storage-driver",
            "vfs",
            "--iptables=false",
            "--bridge=none",
        ],  # fmt: skip
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    engine = DockerEngine(root, process)
    try:
        _wait_until_up(engine)
        yield engine
    finally:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            containers = engine.docker("ps", "-aq").split()
            if containers:
                engine.docker("rm", "-f", *containers)
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        _unmount_below(root)  # dockerd leaves its network namespace mounted under the exec root
        shutil.rmtree(root, ignore_errors=True)


def _unmount_below(root: Path) -> None:
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{root}/")]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, timeout=30, check=False)


def _wait_until_up(engine: DockerEngine) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if engine.process.poll() is not None:
            raise AssertionError(f"dockerd exited with {engine.process.returncode}:\n{engine.log_tail()}")
        probe = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            env=engine.env,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"dockerd did not answer within {START_TIMEOUT:.0f}s:\n{engine.log_tail()}")
        time.sleep(0.2)
