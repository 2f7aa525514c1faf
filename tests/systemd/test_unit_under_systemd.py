"""Every promise of systemd/rollbackd.service, proved against a real systemd (tests/systemd/conftest.py boots it).

The tests share one container and run in file order: the first starts rollbackd, the others find it running.
Each leaves the unit active and its config as the package installed it (with the test's faster probes).
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable

import pytest

from rollbackd.backup.catalog import PARTIAL_SUFFIX
from rollbackd.backup.manifest import MANIFEST_SUFFIX
from tests.support.systemd_container import Container
from tests.systemd.conftest import (
    APP_DIR,
    CONFIG,
    DATA_DIR,
    DATABASE,
    VBRPG,
    WATCHDOG_SECONDS,
    container_config,
)

# The first test carries the session's set-up (the .deb built with --no-cache-dir, the boot, the install): up
# to ~8 minutes on a loaded 2-core machine, beyond the default per-test timeout.
pytestmark = [
    pytest.mark.root,
    pytest.mark.e2e,
    pytest.mark.xdist_group("systemd_container"),
    pytest.mark.timeout(900),
]

UNIT = "rollbackd.service"
BACKUP_DIR = f"{DATA_DIR}/backups"


def wait_until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``predicate`` (tests may poll; library code does not) until true or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f}s waiting for {what}")
        time.sleep(0.5)


def journal(container: Container, *matches: str, since: str | None = None) -> list[dict[str, str]]:
    argv = ["journalctl", "--no-pager", "-o", "json", "-u", UNIT, *matches]
    if since:
        argv += ["--since", since]
    return [json.loads(line) for line in container.check(*argv).splitlines() if line.strip()]


def metrics(container: Container) -> str:
    return container.check("curl", "-sf", "http://127.0.0.1:9797/metrics")


def main_pid(container: Container) -> int:
    return int(container.show(UNIT, "MainPID")["MainPID"])


def history(container: Container, *options: str) -> str:
    """`rollbackd history --json` as the daemon's user (as root it refuses: the state dir is rollbackd's)."""
    return container.check("runuser", "-u", "rollbackd", "--", "rollbackd", "history", "--json", *options)


def now_inside(container: Container) -> str:
    return container.check("date", "+%Y-%m-%d %H:%M:%S").strip()


def test_start_returns_only_after_ready_and_shows_the_status_line(systemd_container: Container) -> None:
    container = systemd_container
    container.check("systemctl", "start", UNIT, timeout=120)
    # Type=notify: `systemctl start` blocks while the unit is "activating" and returns once READY=1 came, so
    # right after it the unit is active, not activating.
    state = container.show(UNIT, "ActiveState", "SubState", "StatusText", "Type", "NRestarts")
    assert (state["ActiveState"], state["SubState"], state["Type"]) == ("active", "running", "notify"), state
    assert state["StatusText"].startswith("vbrpg: "), state
    assert "vbrpg" in container.check("systemctl", "status", "--no-pager", UNIT)


def test_reload_applies_a_new_config_and_keeps_the_old_one_when_invalid(systemd_container: Container) -> None:
    container = systemd_container
    pid = main_pid(container)
    since = now_inside(container)
    try:
        # Valid: rows of two tables instead of three. `systemctl reload` runs ExecReload=/bin/kill (procps, which
        # the package depends on: the minimal root had no /bin/kill before it was installed).
        container.write(CONFIG, container_config().replace(', "game_room_participants"]', "]"), mode=0o640)
        container.check("systemctl", "reload", UNIT)
        wait_until(
            lambda: (
                'table="game_room_participants"' not in metrics(container)
                and 'rollbackd_table_rows{service="vbrpg",table="players"}' in metrics(container)
            ),
            60,
            "the reloaded rows probe",
        )
        # Invalid: logged, the running config kept, the unit still active with the same process.
        container.write(CONFIG, container_config().replace('every = "1s"', 'every = "soon"'), mode=0o640)
        container.check("systemctl", "reload", UNIT)
        wait_until(
            lambda: any("reload rejected" in entry["MESSAGE"] for entry in journal(container, since=since)),
            30,
            "the rejected reload in the journal",
        )
        rejected = next(e["MESSAGE"] for e in journal(container, since=since) if "reload rejected" in e["MESSAGE"])
        assert "service[0].probes.health.every: 'soon' is not a duration" in rejected, rejected
        state = container.show(UNIT, "ActiveState", "MainPID")
        assert (state["ActiveState"], int(state["MainPID"])) == ("active", pid), state
        assert 'rollbackd_config_reloads_total{outcome="rejected"} 1.0' in metrics(container)
        assert 'table="game_room_participants"' not in metrics(container)
    finally:
        container.write(CONFIG, container_config(), mode=0o640)
        container.check("chgrp", "rollbackd", CONFIG)
        container.check("systemctl", "reload", UNIT)


def test_killed_service_is_restarted_through_polkit_and_recorded(systemd_container: Container) -> None:
    container = systemd_container
    backend = "vbrpg-backend.service"
    pid = int(container.show(backend, "MainPID")["MainPID"])
    assert pid > 0
    container.check("kill", "-KILL", str(pid))

    def restarted_and_recorded() -> bool:
        state = container.show(backend, "ActiveState", "MainPID")
        if state["ActiveState"] != "active" or int(state["MainPID"]) in (0, pid):
            return False
        rows = json.loads(history(container))
        return any(row["outcome"] == "recovered" for row in rows)

    wait_until(restarted_and_recorded, 120, "rollbackd to restart vbrpg-backend and record it")
    # It was rollbackd, as user rollbackd (allowed by the packaged polkit rule), not systemd's Restart=.
    restarts = [entry for entry in journal(container, "ACTION=restart") if "restart success" in entry["MESSAGE"]]
    assert restarts, "no successful ACTION=restart record in the journal"
    assert {entry["_UID"] for entry in restarts} == {container.check("id", "-u", "rollbackd").strip()}
    rows = json.loads(history(container))
    assert any("verified" in row["notes"] for row in rows), rows
    assert container.check("curl", "-sf", "http://127.0.0.1:8000/health")


def test_root_is_refused_in_the_daemons_state_dir(systemd_container: Container) -> None:
    # `sudo rollbackd history` once created rollbackd.db as root:root 0600, and the daemon then exited 4.
    result = systemd_container.run("rollbackd", "history")
    assert result.returncode == 2, result
    assert result.stderr.strip() == (
        "rollbackd history: the state dir /var/lib/rollbackd belongs to user rollbackd; "
        "run it as that user: sudo -u rollbackd rollbackd history"
    )
    owners = systemd_container.check("find", "/var/lib/rollbackd", "-not", "-user", "rollbackd")
    assert owners == ""


def test_watchdog_kills_a_stopped_daemon_and_the_restarted_one_finds_its_state(
    systemd_container: Container,
) -> None:
    container = systemd_container
    before = container.show(UNIT, "MainPID", "NRestarts")
    since = now_inside(container)
    incidents_before = history(container, "--all")
    assert json.loads(incidents_before), "the killed-service test before this one left an incident"
    # SIGSTOP: no more WATCHDOG=1 pings; after WatchdogSec systemd aborts it and Restart=on-failure brings it back.
    container.check("kill", "-STOP", before["MainPID"])
    wait_until(
        lambda: int(container.show(UNIT, "NRestarts")["NRestarts"]) > int(before["NRestarts"]),
        WATCHDOG_SECONDS * 3 + 30,
        "systemd to restart the stopped daemon",
    )
    wait_until(lambda: container.show(UNIT, "ActiveState")["ActiveState"] == "active", 60, "the restarted daemon")
    assert int(main_pid(container)) != int(before["MainPID"])
    log = container.check("journalctl", "--no-pager", "-o", "cat", "-u", UNIT, "--since", since)
    assert f"Watchdog timeout (limit {WATCHDOG_SECONDS}s)" in log, log[-3000:]
    assert "Failed with result 'watchdog'" in log, log[-3000:]
    # The restarted daemon opened the same history: nothing it recorded was lost, nothing was recorded twice.
    assert history(container, "--all") == incidents_before


def test_journal_filters_by_service_and_probe(systemd_container: Container) -> None:
    container = systemd_container
    by_service = journal(container, "SERVICE=vbrpg")
    assert by_service and all(entry["SERVICE"] == "vbrpg" for entry in by_service)
    probes = {entry["PROBE"] for entry in by_service if "PROBE" in entry}
    assert "health" in probes, probes
    by_probe = journal(container, "PROBE=health")
    assert by_probe and all(entry["PROBE"] == "health" for entry in by_probe)
    by_incident = journal(container, "INCIDENT=1")
    assert by_incident and {entry["ACTION"] for entry in by_incident if "ACTION" in entry} >= {"restart"}


def test_security_exposure_inside_is_what_the_readme_states(systemd_container: Container) -> None:
    output = systemd_container.check("systemd-analyze", "security", "--no-pager", UNIT)
    match = re.search(r"Overall exposure level for rollbackd\.service: (\d+\.\d) (\w+)", output)
    assert match, output
    assert (float(match[1]), match[2]) == (1.3, "OK")


def sql(container: Container, query: str) -> str:
    """One query on the live database as the service's user (as root, SQLite could create files root owns)."""
    return container.check("runuser", "-u", "vbrpg", "--", "sqlite3", DATABASE, query).strip()


def rollbackd_uid(container: Container) -> str:
    return container.check("id", "-u", "rollbackd").strip()


def write_config(container: Container, text: str) -> None:
    container.write(CONFIG, text, mode=0o640)
    container.check("chgrp", "rollbackd", CONFIG)


def last_incident(container: Container) -> int:
    return max((row["incident"] for row in json.loads(history(container, "--all"))), default=0)


def wait_for_recovered_incident(container: Container, after: int) -> None:
    """Until an incident newer than ``after`` is in the history as recovered (the runbook's checklist passed)."""

    def recovered() -> bool:
        rows = json.loads(history(container, "--all"))
        return any(row["incident"] > after and row["outcome"] == "recovered" for row in rows)

    wait_until(recovered, 120, "the incident to close as recovered")


def action_records(container: Container, action: str, since: str) -> list[dict[str, str]]:
    """The journal's records of finished ``action`` rungs ("vbrpg: <rung> success: ...", ACTION=<action>)."""
    return [
        entry
        for entry in journal(container, f"ACTION={action}", since=since)
        if re.search(r" (success|failed): ", entry["MESSAGE"])
    ]


def test_data_loss_migration_is_restored_by_the_sandboxed_daemon(systemd_container: Container) -> None:
    container = systemd_container
    since = now_inside(container)
    revision = sql(container, "SELECT version_num FROM alembic_version")
    players = sql(container, "SELECT count(*) FROM players")
    incident = last_incident(container)
    try:
        # A deploy of the botched cleanup migration (root deploys; the code stays read-only to rollbackd): the
        # daemon takes the pre-deploy backup when the script arrives, sees the rows gone, restores that backup.
        container.check(VBRPG, "fault", "data-loss", "--db", DATABASE, "--app-dir", APP_DIR, timeout=120)
        wait_for_recovered_incident(container, incident)
        [restore] = action_records(container, "restore", since)
        assert " success: " in restore["MESSAGE"], restore["MESSAGE"]
        assert restore["_UID"] == rollbackd_uid(container)
        assert sql(container, "SELECT version_num FROM alembic_version") == revision
        assert sql(container, "SELECT count(*) FROM players") == players
        # The damaged file is kept beside it, group vbrpg from the setgid dir (the sandbox filters chown).
        kept = container.check("find", DATA_DIR, "-maxdepth", "1", "-name", "vbrpg_corrupted_*.db", "-group", "vbrpg")
        assert kept.strip(), container.check("ls", "-la", DATA_DIR)
        # Moving the blocked script out of the read-only code is refused by the sandbox: one line, no crash.
        log = container.check("journalctl", "--no-pager", "-o", "cat", "-u", UNIT, "--since", since)
        assert "cannot be moved aside (" in log and "Read-only file system" in log, log[-3000:]
        assert container.show(UNIT, "ActiveState")["ActiveState"] == "active"
    finally:
        container.check(VBRPG, "fault", "reset", "--app-dir", APP_DIR)


def test_schema_ahead_of_the_code_is_downgraded_by_the_services_alembic_under_the_sandbox(
    systemd_container: Container,
) -> None:
    container = systemd_container
    since = now_inside(container)
    revision = sql(container, "SELECT version_num FROM alembic_version")
    incident = last_incident(container)
    try:
        # A reversible migration applied, then its script removed: the daemon saw the script arrive (and kept it
        # in its vault), so it can run /opt/vbrpg/venv/bin/alembic downgrade as user rollbackd.
        container.check(VBRPG, "fault", "schema-skew", "--db", DATABASE, "--app-dir", APP_DIR, timeout=120)
        assert sql(container, "SELECT version_num FROM alembic_version") != revision
        wait_for_recovered_incident(container, incident)
        [downgrade] = action_records(container, "downgrade", since)
        assert " success: " in downgrade["MESSAGE"], downgrade["MESSAGE"]
        assert downgrade["_UID"] == rollbackd_uid(container)
        assert sql(container, "SELECT version_num FROM alembic_version") == revision
        assert container.check("curl", "-sf", "http://127.0.0.1:8000/health")
    finally:
        container.check(VBRPG, "fault", "reset", "--app-dir", APP_DIR)


def test_a_backup_dir_outside_read_write_paths_fails_with_one_clear_line(systemd_container: Container) -> None:
    container = systemd_container
    outside = "/srv/vbrpg-backups"
    # Owned by rollbackd: only the sandbox (ProtectSystem=strict, no drop-in naming it) stands in the way.
    container.check("install", "-d", "-o", "rollbackd", "-g", "rollbackd", "-m", "0700", outside)
    pid = main_pid(container)
    since = now_inside(container)
    try:
        write_config(container, container_config().replace('dir = "data/backups"', f'dir = "{outside}"'))
        container.check("systemctl", "reload", UNIT)
        # One line, the backup's reason aside ("startup": the reload started the service's backups afresh).
        expected = re.compile(
            rf"vbrpg: \w+ backup failed \(dir_unwritable\): backup dir {outside} is on a read-only file system "
            r"here: under systemd, add it to ReadWritePaths= in a drop-in of rollbackd\.service"
        )
        wait_until(
            lambda: any(expected.search(entry["MESSAGE"]) for entry in journal(container, since=since)),
            60,
            "the failed backup in the journal",
        )
        assert container.check("ls", "-A", outside) == ""
        state = container.show(UNIT, "ActiveState", "MainPID")
        assert (state["ActiveState"], int(state["MainPID"])) == ("active", pid), state
    finally:
        write_config(container, container_config())
        container.check("systemctl", "reload", UNIT)
        container.check("rm", "-rf", outside)


def test_stop_during_a_backup_of_a_large_database_ends_cleanly_and_keeps_no_partial_copy(
    systemd_container: Container,
) -> None:
    container = systemd_container
    # ~512 MiB of ballast in the live database (in 8 commits, so the WAL is checkpointed as it goes): a copy of
    # it takes seconds, far longer than the 10 ms this config gives a stop before a running copy gives up.
    batch = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1024) "
        "INSERT INTO ballast SELECT randomblob(65536) FROM n;\n"
    )
    grow = container.run(
        "runuser", "-u", "vbrpg", "--", "sqlite3", DATABASE,
        input_text="CREATE TABLE IF NOT EXISTS ballast (data BLOB);\n" + batch * 8, timeout=600,
    )  # fmt: skip
    assert grow.returncode == 0, grow.stderr
    backups = container.path(BACKUP_DIR)
    kept_before = sorted(path.name for path in backups.glob("vbrpg_backup_*.db"))
    since = now_inside(container)
    try:
        # A reload starts the service's backups afresh: the newest backup is older than 5 s, so one starts at once.
        write_config(
            container,
            container_config()
            .replace('every = "1h"', 'every = "5s"')
            .replace('shutdown_timeout = "30s"', 'shutdown_timeout = "10ms"'),
        )
        container.check("systemctl", "reload", UNIT)

        def copying() -> bool:
            return any(PARTIAL_SUFFIX in path.name for path in backups.iterdir())

        deadline = time.monotonic() + 120
        while not copying():  # the copy runs for seconds: a 20 ms poll of the host's view of the dir sees it
            assert time.monotonic() < deadline, "no backup started after the reload"
            time.sleep(0.02)
        container.check("systemctl", "stop", UNIT, timeout=120)

        state = container.show(UNIT, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
        assert (state["ActiveState"], state["Result"]) == ("inactive", "success"), state
        log = container.check("journalctl", "--no-pager", "-o", "cat", "-u", UNIT, "--since", since)
        assert re.search(r"vbrpg: \w+ backup abandoned: rollbackd is stopping; the copy was at", log), log[-3000:]
        for sign in ("SIGKILL", "Killing process", "timed out", "Failed with result"):
            assert sign not in log, log[-3000:]
        # Nothing of the abandoned copy is left: no temp file, no backup without a manifest, no new backup.
        names = sorted(path.name for path in backups.iterdir())
        assert not [name for name in names if name.startswith(".")], names
        kept = sorted(path.name for path in backups.glob("vbrpg_backup_*.db"))
        assert kept == kept_before, names
        assert all(f"{name}{MANIFEST_SUFFIX}" in names for name in kept), names
    finally:
        write_config(container, container_config())
        container.check("systemctl", "start", UNIT, timeout=120)


def test_no_system_call_was_refused_and_nothing_crashed_over_the_suite(systemd_container: Container) -> None:
    # Last in the file: by now the daemon has started, reloaded, been killed by the watchdog and restarted a unit.
    log = systemd_container.check("journalctl", "--no-pager", "-o", "cat")
    assert "SIGSYS" not in log
    assert f"status={signal.SIGSYS.value}/SYS" not in log
    daemon_log = systemd_container.check("journalctl", "--no-pager", "-o", "cat", "-u", UNIT)
    # Under the sandbox a probe met a PermissionError (another user's /proc/PID/fd), and the vault a folder
    # made 0600 by a process-wide umask: both showed here only.
    assert "Traceback" not in daemon_log
    assert "Permission denied" not in daemon_log


def test_purge_keeps_a_user_that_still_owns_files_and_removes_one_that_does_not(systemd_container: Container) -> None:
    # After the rest of the suite (it removes the package): the backups and the restored database rollbackd made
    # in the data dir are its files, and that dir is named by the drop-in's ReadWritePaths=.
    container = systemd_container
    owned = container.check("find", DATA_DIR, "-user", "rollbackd").split()
    assert owned, "the suite left no file of rollbackd's in the data dir"
    purge = container.run("apt-get", "purge", "-y", "-q", "rollbackd", timeout=300)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    output = purge.stdout + purge.stderr
    assert "rollbackd: keeping the system user and group rollbackd: they still own files outside" in output, output
    assert any(f"  {path}" in output for path in owned), output
    assert container.run("getent", "passwd", "rollbackd").returncode == 0
    for path in ("/var/lib/rollbackd", "/etc/rollbackd", "/opt/rollbackd"):
        assert not container.path(path).exists(), path

    # Given to the service's user, nothing holds the user back: reinstalled and purged again, it goes.
    container.check("chown", "-R", "vbrpg:vbrpg", DATA_DIR)
    [deb] = container.path("/root/install").glob("rollbackd_*.deb")
    container.check(
        "apt-get", "install", "-y", "-q", "--no-install-recommends", f"/root/install/{deb.name}", timeout=300
    )
    again = container.run("apt-get", "purge", "-y", "-q", "rollbackd", timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "keeping the system user" not in again.stdout + again.stderr
    assert container.run("getent", "passwd", "rollbackd").returncode != 0
    assert container.run("getent", "group", "rollbackd").returncode != 0
