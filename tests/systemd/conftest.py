"""One booted systemd per test session, with the .deb from this tree installed and vbrpg-backend running.

Everything inside is what an operator would do after `apt-get install ./rollbackd_*.deb` (README,
"Operations"): the example VBRPG backend as the real unit `vbrpg-backend.service` (user vbrpg, UMask=0007, the
data dir group-writable and setgid), rollbackd's shipped unit with the packaged example drop-in installed as the
README says (SupplementaryGroups=vbrpg, ReadWritePaths= the data dir) and one of the test's own (a short
WatchdogSec= for the watchdog test), the shipped config with faster probes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollbackd import __version__
from tests.support.systemd_container import Container, booted_container, missing_host_tools, new_workdir

REPO = Path(__file__).resolve().parents[2]
WATCHDOG_SECONDS = 6
CONFIG = "/etc/rollbackd/rollbackd.toml"
DATA_DIR = "/opt/vbrpg/backend/data"

VBRPG_UNIT = """\
[Unit]
Description=VBRPG game backend (the rollbackd example service)
After=network.target

[Service]
User=vbrpg
Group=vbrpg
# -wal/-shm files it creates stay writable for rollbackd through the group (README, "Operations")
UMask=0007
WorkingDirectory=/opt/vbrpg/backend
ExecStart=/opt/vbrpg/venv/bin/vbrpg-example serve --db /opt/vbrpg/backend/data/vbrpg.db \
    --app-dir /opt/vbrpg/backend --host 127.0.0.1 --port 8000
# No Restart=: bringing it back is rollbackd's job here, which is what the tests prove.

[Install]
WantedBy=multi-user.target
"""

ROLLBACKD_DROP_IN = f"""\
[Service]
WatchdogSec={WATCHDOG_SECONDS}s
"""
EXAMPLE_DROP_IN = "/usr/share/doc/rollbackd/examples/vbrpg.conf"
VBRPG = "/opt/vbrpg/venv/bin/vbrpg-example"
APP_DIR = "/opt/vbrpg/backend"
DATABASE = f"{DATA_DIR}/vbrpg.db"


def container_config() -> str:
    """The packaged config with probes every second or few, so a test sees a fault handled in seconds."""
    text = (REPO / "config/rollbackd.toml").read_text()
    faster = (
        (r'(\[service\.probes\.health\]\n)every = "5s"', r'\1every = "1s"'),
        (r'(paths = \["/api/rooms/ABC123"\][^\n]*\n)every = "5s"', r'\1every = "2s"'),
        (r'(tables = \[[^\n]*\n)every = "30s"', r'\1every = "5s"'),
    )
    for pattern, replacement in faster:
        text, count = re.subn(pattern, replacement, text)
        assert count == 1, f"config/rollbackd.toml changed shape: {pattern}"
    return text


def run_host(*argv: str | Path, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
    return result.stdout


def skip_unless_containers_work() -> None:
    if os.geteuid() != 0:
        pytest.skip("booting a systemd-nspawn container needs root (CI runs as root)")
    missing = missing_host_tools()
    if missing:
        pytest.skip(f"booting systemd needs the Debian packages: apt-get install {' '.join(missing)}")
    if not Path("/etc/apt/sources.list.d/debian.sources").exists():
        pytest.skip("mmdebstrap makes the root from this machine's Debian apt sources, and there are none")


def install_inside(container: Container, deb: Path, wheels: Path) -> None:
    """What the operator does: install the package, set up vbrpg as the README says, start it."""
    inbox = container.path("/root/install")
    inbox.mkdir(parents=True, exist_ok=True)
    run_host("cp", "-a", deb, wheels, inbox)
    container.check(
        "apt-get", "install", "-y", "-q", "--no-install-recommends", f"/root/install/{deb.name}", timeout=300
    )
    container.check("adduser", "--quiet", "--system", "--group", "--home", "/opt/vbrpg", "--no-create-home", "vbrpg")
    container.check("python3", "-m", "venv", "/opt/vbrpg/venv")
    container.check(
        "/opt/vbrpg/venv/bin/pip", "install", "-q", "--no-index", "--find-links", "/root/install/wheels",
        "vbrpg-example", timeout=300,
    )  # fmt: skip
    container.check(VBRPG, "init-app", APP_DIR)
    container.check(VBRPG, "migrate", "--db", DATABASE, "--app-dir", APP_DIR)
    container.check(VBRPG, "seed", "--db", DATABASE, "--rooms", "20", "--players", "40")
    container.check("chown", "-R", "vbrpg:vbrpg", DATA_DIR)
    container.check("chmod", "-R", "g+rwX", DATA_DIR)
    container.check("chmod", "g+s", DATA_DIR)
    container.write("/etc/systemd/system/vbrpg-backend.service", VBRPG_UNIT)
    # The unit names no service: the example's data dir comes from the packaged drop-in, as the README says.
    container.check(
        "install", "-D", "-m", "0644", EXAMPLE_DROP_IN, "/etc/systemd/system/rollbackd.service.d/vbrpg.conf"
    )
    container.write("/etc/systemd/system/rollbackd.service.d/test.conf", ROLLBACKD_DROP_IN)
    container.write(CONFIG, container_config(), mode=0o640)
    container.check("chgrp", "rollbackd", CONFIG)
    container.check("systemctl", "daemon-reload")
    container.check("systemctl", "start", "vbrpg-backend.service")
    container.check(
        "curl", "-sf", "--retry", "30", "--retry-connrefused", "--retry-delay", "1", "http://127.0.0.1:8000/health"
    )


@pytest.fixture(scope="session")
def systemd_container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    skip_unless_containers_work()
    build = tmp_path_factory.mktemp("deb")
    run_host(
        "bash",
        REPO / "packaging/build-deb.sh",
        timeout=600,
        env={**os.environ, "OUT_DIR": str(build), "BUILD_PYTHON": sys.executable},
    )
    arch = run_host("dpkg", "--print-architecture").strip()
    deb = build / f"rollbackd_{__version__}_{arch}.deb"
    wheels = build / "wheels"
    run_host(sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", wheels, REPO / "examples/vbrpg")
    workdir = new_workdir()
    try:
        with booted_container(f"rollbackd-test-{os.getpid()}", workdir) as container:
            install_inside(container, deb, wheels)
            yield container
    finally:
        run_host("rm", "-rf", workdir)
