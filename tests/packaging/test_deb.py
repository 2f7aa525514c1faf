"""The Debian package as an operator meets it: build, dpkg -i, run, verify the unit, polkit, dpkg -r, dpkg --purge.

Installs for real into this machine's /opt, /usr/bin, /lib/systemd/system and /etc, creates the system user, and
purges all of it in a finalizer, also when an assertion fails. PID 1 is not systemd here, so the unit is checked
with `systemd-analyze verify` rather than started; the polkit rule is checked by a real polkitd on a private
D-Bus system bus started by the test.
"""

from __future__ import annotations

import io
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rollbackd import __version__

REPO = Path(__file__).resolve().parents[2]
UNIT = Path("/lib/systemd/system/rollbackd.service")
POLKIT_RULE = Path("/usr/share/polkit-1/rules.d/50-rollbackd.rules")

# The module fixture builds the .deb (minutes on a loaded machine), counted in the first test's timeout.
pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.timeout(900)]


def run(*argv: str | Path, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def package_state() -> str:
    result = run("dpkg-query", "-W", "-f=${db:Status-Status}", "rollbackd")
    return result.stdout if result.returncode == 0 else "not-installed"


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def skip_unless_packaging_works() -> None:
    if os.geteuid() != 0:
        pytest.skip("installing a .deb needs root (CI runs as root)")
    for tool in ("dpkg-deb", "dpkg", "adduser", "systemd-analyze"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian only)")
    if run("/usr/bin/python3", "-c", "import venv").returncode != 0:
        pytest.skip("/usr/bin/python3 with venv (python3-venv) is what the package is built against")
    for module in ("build", "shtab"):
        if run(sys.executable, "-c", f"import {module}").returncode != 0:
            pytest.skip(f"the {module!r} package is missing: pip install -e '.[test]'")
    if package_state() not in ("not-installed", "config-files") or user_exists("rollbackd"):
        pytest.skip("a rollbackd package or user is already on this machine; not touching it")


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    skip_unless_packaging_works()
    out = tmp_path_factory.mktemp("out")
    result = run(
        "bash",
        REPO / "packaging/build-deb.sh",
        timeout=600,  # every locked wheel fetched afresh (--no-cache-dir) and systemd-python compiled
        env={**os.environ, "OUT_DIR": str(out), "BUILD_PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    arch = run("dpkg", "--print-architecture").stdout.strip()
    package = out / f"rollbackd_{__version__}_{arch}.deb"
    assert package.is_file(), sorted(p.name for p in out.iterdir())
    assert (out / f"rollbackd-{__version__}-py3-none-any.whl").is_file()
    assert (out / f"rollbackd-{__version__}.tar.gz").is_file()
    return package


@pytest.fixture
def installed(deb: Path) -> Iterator[Path]:
    """dpkg -i the package; purge it afterwards whatever happened."""
    try:
        result = run("dpkg", "-i", deb)
        assert result.returncode == 0, result.stdout + result.stderr
        yield deb
    finally:
        run("dpkg", "--purge", "rollbackd")


def test_package_installs_runs_and_removes_without_leftovers(installed: Path) -> None:
    # Installed: the command, its venv, the user and state dir, the conffile readable by the daemon only.
    version = run("/usr/bin/rollbackd", "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"rollbackd {__version__}"), version.stderr
    check = run("/usr/bin/rollbackd", "check-config", "/etc/rollbackd/rollbackd.toml")
    assert check.returncode == 0, check.stderr  # warnings about a missing /opt/vbrpg are expected here
    assert "valid (1 service(s))" in check.stderr

    user = pwd.getpwnam("rollbackd")
    assert user.pw_dir == "/var/lib/rollbackd"
    assert user.pw_shell.endswith("nologin")
    state = os.stat("/var/lib/rollbackd")
    assert (state.st_uid, stat.S_IMODE(state.st_mode)) == (user.pw_uid, 0o700)
    config = os.stat("/etc/rollbackd/rollbackd.toml")
    assert (config.st_uid, config.st_gid, stat.S_IMODE(config.st_mode)) == (0, user.pw_gid, 0o640)
    assert "/etc/rollbackd/rollbackd.toml" in run("dpkg-query", "-W", "-f=${Conffiles}", "rollbackd").stdout

    verify = run("systemd-analyze", "verify", UNIT)
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")

    # Every file in the venv is dpkg's, none names the staging dir, and running the CLI wrote no bytecode.
    owned = set(run("dpkg", "-L", "rollbackd").stdout.split("\n"))
    on_disk = {str(path) for path in Path("/opt/rollbackd").rglob("*") if not path.is_dir() or path.is_symlink()}
    assert on_disk - owned == set()
    staged = run("grep", "-rlI", "rollbackd-deb.", "/opt/rollbackd")
    assert staged.stdout == ""

    # dpkg -r: the program, venv and unit go; config, state and the user stay for a reinstall.
    removed = run("dpkg", "-r", "rollbackd")
    assert removed.returncode == 0, removed.stderr
    for path in ("/opt/rollbackd", "/usr/bin/rollbackd", str(UNIT), str(POLKIT_RULE)):
        assert not os.path.lexists(path), path
    assert Path("/etc/rollbackd/rollbackd.toml").exists()
    assert user_exists("rollbackd")
    assert package_state() == "config-files"

    # dpkg --purge: nothing is left.
    purged = run("dpkg", "--purge", "rollbackd")
    assert purged.returncode == 0, purged.stderr
    for path in ("/etc/rollbackd", "/var/lib/rollbackd"):
        assert not os.path.lexists(path), path
    assert not user_exists("rollbackd")
    assert run("getent", "group", "rollbackd").returncode != 0
    assert package_state() == "not-installed"


def test_the_package_carries_bash_and_zsh_completion(deb: Path) -> None:
    """From the built .deb's own file tree, without installing it: both scripts, readable, for `rollbackd`."""
    tree = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, timeout=120, check=True)
    with tarfile.open(fileobj=io.BytesIO(tree.stdout)) as archive:
        bash = archive.getmember("./usr/share/bash-completion/completions/rollbackd")
        zsh = archive.getmember("./usr/share/zsh/vendor-completions/_rollbackd")
        assert (bash.mode, zsh.mode) == (0o644, 0o644)
        bash_text = archive.extractfile(bash).read().decode()  # type: ignore[union-attr]
        zsh_text = archive.extractfile(zsh).read().decode()  # type: ignore[union-attr]
    assert "complete -o bashdefault -F _shtab_rollbackd rollbackd" in bash_text
    assert zsh_text.startswith("#compdef rollbackd") and "status:'" in zsh_text


# ---- polkit: a real polkitd evaluates the installed rule --------------------------------------------------


def wait_for(predicate: Callable[[], bool], deadline: float, what: str) -> None:
    """Poll ``predicate`` until it is true or ``deadline`` (monotonic) passes (tests may poll; library code not)."""
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def private_system_bus(tmp_path: Path) -> Iterator[dict[str, str]]:
    """dbus-daemon with the system bus policy on a socket in tmp_path, and polkitd on it.

    polkitd reads its rules from the fixed /etc and /usr/share rules.d directories, so it sees the package's
    rule as installed. Yields the environment that points pkcheck at this bus.
    """
    for program in ("/usr/bin/dbus-daemon", "/usr/bin/dbus-send", "/usr/lib/polkit-1/polkitd", "/usr/bin/pkcheck"):
        if not os.path.exists(program):
            pytest.skip(f"{program} is not installed (Debian packages dbus-daemon, dbus-bin, polkitd)")
    if not Path("/usr/share/polkit-1/actions/org.freedesktop.systemd1.policy").exists():
        pytest.skip("systemd's polkit actions are not installed")
    # polkitd drops to its own user before it connects, so the socket's folder (and its parents) must be
    # reachable by that user: pytest's tmp_path lives under a 0700 folder, a fresh folder in /tmp does not.
    bus_dir = Path(tempfile.mkdtemp(prefix="rollbackd-bus-"))
    bus_dir.chmod(0o755)
    socket_path = bus_dir / "system_bus_socket"
    config = Path("/usr/share/dbus-1/system.conf").read_text()
    config = (
        config.replace("<user>messagebus</user>", "")
        .replace("<pidfile>/run/dbus/pid</pidfile>", "")
        .replace("unix:path=/run/dbus/system_bus_socket", f"unix:path={socket_path}")
        .replace("<includedir>system.d</includedir>", "<includedir>/usr/share/dbus-1/system.d</includedir>")
    )
    (tmp_path / "system.conf").write_text(config)
    environment = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={socket_path}"}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(
            subprocess.Popen(
                ["/usr/bin/dbus-daemon", f"--config-file={tmp_path / 'system.conf'}", "--nofork", "--nosyslog"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        wait_for(socket_path.exists, time.monotonic() + 20, "the private system bus")
        processes.append(
            subprocess.Popen(
                ["/usr/lib/polkit-1/polkitd", "--no-debug"],
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        owner = ["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"]
        has_owner = [*owner, "org.freedesktop.DBus.NameHasOwner", "string:org.freedesktop.PolicyKit1"]
        wait_for(
            lambda: "boolean true" in run(*has_owner, env=environment).stdout,
            time.monotonic() + 20,
            "polkitd on the private bus",
        )
        yield environment
    finally:
        for process in reversed(processes):
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(bus_dir, ignore_errors=True)


def pkcheck(environment: dict[str, str], pid: int, unit: str, verb: str) -> int:
    """0: authorized; 1: not authorized; 2: would need a password (not authorized for a daemon)."""
    return run(
        "pkcheck",
        "--action-id",
        "org.freedesktop.systemd1.manage-units",
        "--process",
        str(pid),
        "--detail",
        "unit",
        unit,
        "--detail",
        "verb",
        verb,
        env=environment,
    ).returncode


def test_polkit_lets_rollbackd_start_stop_restart_vbrpg_backend_only(
    installed: Path, private_system_bus: dict[str, str]
) -> None:
    # PID 1 would ask polkit exactly this (action org.freedesktop.systemd1.manage-units with unit and verb
    # details) when rollbackd runs `systemctl restart vbrpg-backend.service`; the subject is a rollbackd process.
    assert POLKIT_RULE.exists()
    subjects = {}
    processes = []
    try:
        for user in ("rollbackd", "nobody"):
            process = subprocess.Popen(
                ["setpriv", f"--reuid={user}", f"--regid={user if user != 'nobody' else 'nogroup'}", "--clear-groups"]
                + ["sleep", "120"]
            )
            processes.append(process)
            subjects[user] = process.pid
        wait_for(
            lambda: all("Name:\tsleep" in Path(f"/proc/{pid}/status").read_text() for pid in subjects.values()),
            time.monotonic() + 10,
            "the subject processes",
        )
        for verb in ("start", "stop", "restart"):
            assert pkcheck(private_system_bus, subjects["rollbackd"], "vbrpg-backend.service", verb) == 0, verb
        assert pkcheck(private_system_bus, subjects["rollbackd"], "vbrpg-backend.service", "reload") in (1, 2)
        assert pkcheck(private_system_bus, subjects["rollbackd"], "ssh.service", "restart") in (1, 2)
        assert pkcheck(private_system_bus, subjects["nobody"], "vbrpg-backend.service", "restart") in (1, 2)
    finally:
        for process in processes:
            process.kill()
            process.wait()
