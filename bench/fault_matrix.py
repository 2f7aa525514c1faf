"""The fault matrix: every fault the example can inject, plus file-level ones, against a real `rollbackd run`.

Each fault gets a fresh stack (tests/support/stack.py: the example service seeded, controlled with the `command`
kind, a real daemon with every probe at 500 ms and the built-in rules at the e2e tests' short durations), so one
fault cannot poison the next. The fault is injected, the daemon's first incident after it is read from its state
DB (what `rollbackd history --json` reads) and the table row says what the runbook expects and what was done:

- detected: fault injected -> incident opened; verified: incident opened -> closed (recovered, verified);
- rows lost: rooms, players and seats counted before the fault minus those counted after the outcome;
- PASS when the rule, the actions and the outcome are the expected ones, no row is lost and (for an action) the
  service answers /health 200 at the end.

`--soak SECONDS` runs a noisy-but-healthy service instead (single 503s, a moment's "degraded" body, API jitter
under the bound, short write locks) and reports the incidents and actions it caused (expected: none).

    .venv/bin/python bench/fault_matrix.py                  # the whole matrix
    .venv/bin/python bench/fault_matrix.py --only kill,data-loss
    .venv/bin/python bench/fault_matrix.py --only none --soak 120
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.rollbackd_daemon import PYTHON, wait_for  # noqa: E402
from tests.support.stack import Stack  # noqa: E402
from tests.support.vbrpg_service import free_port  # noqa: E402

HEALTH_BODY = '[service.probes.health]\nexpect_json = { "/status" = "ok" }\n'
TABLES = ("game_rooms", "players", "game_room_participants")


class MatrixStack(Stack):
    """The e2e stack with the shipped configs' health body expectation (a 200 saying "degraded" fails)."""

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text()
        self.config_path.write_text(text.replace("[service.probes.health]\n", HEALTH_BODY, 1))


# An operator's start lands first; rollbackd's own restart then finds the service running and exits non-zero
# (the same race as tests/actions/test_executor_judgement.py).
OPERATOR_RACE = (
    "import subprocess, sys; argv = sys.argv[1:]; subprocess.run(argv, check=True); "
    "sys.exit(subprocess.run(argv, check=False).returncode)"
)


class RacedRestartStack(MatrixStack):
    def control_config(self) -> str:
        restart = [PYTHON, "-c", OPERATOR_RACE, *self.start_argv()]
        return super().control_config() + f"restart = {json.dumps(restart)}\n"


# Loaded into the serving process (PYTHONPATH): a thread that, when the bench writes a number of seconds into
# the FIFO, takes the database's write lock in the service's own process and holds it, as a stuck writer in the
# service would. The example has no endpoint for that; the lock and its holder's pid are real.
SERVICE_LOCK_HOOK = """
import os, sqlite3, sys, threading, time

def _hold(fifo, database):
    while True:
        with open(fifo) as request:
            seconds = float(request.read().strip() or 0)
        connection = sqlite3.connect(database, isolation_level=None, timeout=5)
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("CREATE TABLE fault_matrix_lock_held (id INTEGER)")
        time.sleep(seconds)
        connection.execute("ROLLBACK")
        connection.close()

if "serve" in sys.argv and "--ready-fd" in sys.argv and os.environ.get("FAULT_MATRIX_LOCK_FIFO"):
    threading.Thread(
        target=_hold,
        args=(os.environ["FAULT_MATRIX_LOCK_FIFO"], os.environ["FAULT_MATRIX_LOCK_DB"]),
        daemon=True,
    ).start()
"""


class ServiceLockStack(MatrixStack):
    """The service started with SERVICE_LOCK_HOOK, so its own process can be made to hold the write lock."""

    @property
    def hook_dir(self) -> Path:
        return self.root / "hook"

    @property
    def lock_fifo(self) -> Path:
        return self.root / "hold-lock.fifo"

    def set_up(self) -> None:
        self.hook_dir.mkdir(parents=True, exist_ok=True)
        (self.hook_dir / "sitecustomize.py").write_text(SERVICE_LOCK_HOOK)
        os.mkfifo(self.lock_fifo, 0o600)
        super().set_up()

    def start_argv(self) -> list[str]:
        environment = [
            f"PYTHONPATH={self.hook_dir}",
            f"FAULT_MATRIX_LOCK_FIFO={self.lock_fifo}",
            f"FAULT_MATRIX_LOCK_DB={self.database}",
        ]
        return ["/usr/bin/env", *environment, *super().start_argv()]

    def hold_lock(self, seconds: float) -> None:
        descriptor = os.open(self.lock_fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: no service is listening
        try:
            os.write(descriptor, f"{seconds}\n".encode())
        finally:
            os.close(descriptor)


class TricklingProxy:
    """A plain TCP proxy on 127.0.0.1 in front of the service. While the service process it was aimed at lives, a
    connection whose first request is GET /health gets its answer one byte every 0.5 s (a slowloris health: each
    read succeeds, the answer never ends in time). A restarted service is a new process and is passed at speed."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.trickle_pid: int | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(timeout=10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    def _trickling(self) -> bool:
        if self.trickle_pid is None:
            return False
        try:
            os.kill(self.trickle_pid, 0)
        except ProcessLookupError:
            return False
        return True

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        asking_health = [False]  # the connection's latest request (keep-alive: one connection, many requests)
        with contextlib.suppress(OSError, ConnectionError):
            await asyncio.gather(
                self._requests(client_reader, upstream_writer, asking_health),
                self._answers(upstream_reader, client_writer, asking_health),
            )
        for writer in (client_writer, upstream_writer):
            writer.close()

    @staticmethod
    async def _requests(source: asyncio.StreamReader, target: asyncio.StreamWriter, asking_health: list[bool]) -> None:
        while data := await source.read(65536):
            if data[:1].isalpha():  # a request line starts the chunk
                asking_health[0] = data.startswith(b"GET /health")
            target.write(data)
            await target.drain()
        target.close()

    async def _answers(
        self, source: asyncio.StreamReader, target: asyncio.StreamWriter, asking_health: list[bool]
    ) -> None:
        while data := await source.read(65536):
            if asking_health[0] and self._trickling():
                for byte in data:
                    target.write(bytes([byte]))
                    await target.drain()
                    await asyncio.sleep(0.5)
            else:
                target.write(data)
                await target.drain()
        target.close()


class SlowlorisStack(MatrixStack):
    """rollbackd (and the bench) reach the service through a TricklingProxy."""

    proxy: TricklingProxy | None = None

    @property
    def base_url(self) -> str:
        if self.proxy is None:
            self.proxy = TricklingProxy(self.port)
            self.proxy.start()
        return f"http://127.0.0.1:{self.proxy.port}"

    def tear_down(self) -> None:
        super().tear_down()
        if self.proxy is not None:
            self.proxy.stop()


def slowloris_health(stack: Stack, _: contextlib.ExitStack) -> None:
    assert isinstance(stack, SlowlorisStack) and stack.proxy is not None
    stack.proxy.trickle_pid = int((stack.workdir / "run" / "vbrpg.pid").read_text().strip())


# Faults


Inject = Callable[[Stack, contextlib.ExitStack], None]


def example_fault(name: str, *arguments: object) -> Inject:
    def inject(stack: Stack, _: contextlib.ExitStack) -> None:
        stack.fault(name, *arguments)

    return inject


def chaos(**settings: Any) -> Inject:
    def inject(stack: Stack, _: contextlib.ExitStack) -> None:
        with stack.client() as client:
            client.post("/chaos", json=settings).raise_for_status()

    return inject


def checkpointed(stack: Stack) -> None:
    """Move every page into the main file first, so the damage is not hidden by a newer copy in the WAL."""
    with contextlib.closing(sqlite3.connect(stack.database, timeout=10)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def zero_header(stack: Stack, _: contextlib.ExitStack) -> None:
    checkpointed(stack)
    descriptor = os.open(stack.database, os.O_WRONLY)
    try:
        os.pwrite(descriptor, bytes(100), 0)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def zero_interior_page(stack: Stack, _: contextlib.ExitStack) -> None:
    """Zero one interior (non-root, non-leaf) b-tree page of the seats table: its rows are still in the file."""
    checkpointed(stack)
    with contextlib.closing(sqlite3.connect(stack.database, timeout=10)) as connection:
        page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
        root = int(
            connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'game_room_participants'").fetchone()[0]
        )
        rows = connection.execute(
            "SELECT pageno, pagetype FROM dbstat WHERE name = 'game_room_participants' ORDER BY pageno"
        ).fetchall()
    interior = [page for page, kind in rows if kind == "internal" and page != root]
    leaves = [page for page, kind in rows if kind == "leaf" and page != root]
    page = (interior or leaves)[len(interior or leaves) // 2]
    descriptor = os.open(stack.database, os.O_WRONLY)
    try:
        os.pwrite(descriptor, bytes(page_size), (page - 1) * page_size)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def truncate_half(stack: Stack, _: contextlib.ExitStack) -> None:
    checkpointed(stack)
    size = stack.database.stat().st_size
    os.truncate(stack.database, size // 2)


def delete_database(stack: Stack, _: contextlib.ExitStack) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{stack.database}{suffix}").unlink(missing_ok=True)


def lock_by_other_process(stack: Stack, exits: contextlib.ExitStack) -> None:
    holder = subprocess.Popen(
        [PYTHON, "-m", "vbrpg_example", "fault", "lock", "--db", str(stack.database), "--seconds", "60"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    exits.callback(lambda: (holder.terminate(), holder.wait(timeout=30)))


def lock_by_service(stack: Stack, _: contextlib.ExitStack) -> None:
    assert isinstance(stack, ServiceLockStack)
    stack.hold_lock(600)


def kill_after_every_restart(stack: Stack, exits: contextlib.ExitStack) -> None:
    stop = threading.Event()

    def keep_killing() -> None:
        while not stop.is_set():
            if stack.health() == 200 and stack.state() == "ok":
                stack.fault("kill")
            stop.wait(1.0)

    killer = threading.Thread(target=keep_killing, daemon=True)
    killer.start()
    exits.callback(lambda: (stop.set(), killer.join(timeout=30)))


def wal_growth(stack: Stack, exits: contextlib.ExitStack) -> None:
    """A long reader (another process) starving checkpoints while a writer keeps adding 64 KiB rows."""
    from tests.probes.test_wal_growing import long_reader

    with contextlib.closing(sqlite3.connect(stack.database, timeout=10)) as connection:
        connection.execute("CREATE TABLE t (payload BLOB)")
        connection.execute("INSERT INTO t VALUES (randomblob(16))")
        connection.commit()
    exits.enter_context(long_reader(stack.database))
    stop = threading.Event()

    def write() -> None:
        with contextlib.closing(sqlite3.connect(stack.database, timeout=10, isolation_level=None)) as writer:
            for _ in range(70 * 16):  # 70 MiB: past the 64 MiB floor
                writer.execute("INSERT INTO t VALUES (randomblob(65536))")
            while not stop.wait(0.5):  # then growing on, slowly
                writer.execute("INSERT INTO t VALUES (randomblob(65536))")

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    exits.callback(lambda: (stop.set(), thread.join(timeout=30)))


def code_rolled_back_after_bad_downgrade(stack: Stack, _: contextlib.ExitStack) -> None:
    """The clean-forward, broken-downgrade migration, then its script removed as a code rollback would: the
    database is ahead of the code and the vaulted downgrade raises."""
    stack.fault("bad-downgrade")
    wait_for(lambda: list((stack.state_dir / "vault" / "vbrpg").glob("6b3f9e1d7c52_*.py")), "the vaulted script")
    for script in (stack.workdir / "alembic" / "versions").glob("6b3f9e1d7c52_*.py"):
        script.unlink()


# The matrix


@dataclass(frozen=True)
class Case:
    name: str
    fault: str  # what is done, in the operator's words
    inject: Inject
    rule: str | None  # None: nothing may happen
    actions: tuple[str, ...] = ()
    outcome: str = "recovered"  # recovered | alerted | hold | none
    extra_config: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    stack: type[Stack] = MatrixStack
    timeout: float = 150.0
    quiet_for: float = 25.0  # outcome "none": how long nothing may happen


def rule_override(name: str, **keys: object) -> str:
    body = "".join(f"{key.replace('for_', 'for')} = {json.dumps(value)}\n" for key, value in keys.items())
    return f'\n[[service.rules]]\nname = "{name}"\n{body}'


BIG = {"rooms": 150_000, "players": 300_000, "participants_per_room": 4, "latency_bound": "15ms"}

CASES: tuple[Case, ...] = (
    Case("kill", "service process SIGKILLed", example_fault("kill"), "process-down", ("restart",)),
    Case(
        "kill-after-every-restart",
        "killed again after every recovery",
        kill_after_every_restart,
        "process-down",
        ("restart", "restart", "restart"),
        outcome="hold",
        timeout=240,
    ),
    Case(
        "restart-race",
        "killed; the restart races an operator's start",
        example_fault("kill"),
        "process-down",
        ("restart",),
        stack=RacedRestartStack,
    ),
    Case(
        "fk-violation",
        "failed migration (FK violation)",
        example_fault("fk-violation"),
        "migration-failed",
        ("downgrade", "restore"),
    ),
    Case("data-loss", "data-loss migration", example_fault("data-loss"), "data-loss", ("restore",)),
    Case(
        "drop-index",
        "migration drops an index (600k seats)",
        example_fault("drop-index"),
        "slow-after-index-drop",
        ("downgrade",),
        options=BIG,
        timeout=240,
    ),
    Case("schema-skew", "schema ahead of the code", example_fault("schema-skew"), "schema-ahead", ("downgrade",)),
    Case(
        "bad-downgrade",
        "clean migration, broken downgrade (healthy)",
        example_fault("bad-downgrade"),
        None,
        outcome="none",
    ),
    Case(
        "bad-downgrade-rolled-back",
        "code rolled back over a broken downgrade",
        code_rolled_back_after_bad_downgrade,
        "schema-ahead",
        ("downgrade", "restore"),
    ),
    Case("corrupt", "b-tree pages overwritten (example)", example_fault("corrupt"), "integrity-failed", ("restore",)),
    Case("header-zeroed", "database header zeroed", zero_header, "integrity-failed", ("restore",)),
    Case("page-zeroed", "interior b-tree page zeroed", zero_interior_page, "integrity-failed", ("restore",)),
    Case("truncated", "database file truncated to half", truncate_half, "integrity-failed", ("restore",)),
    Case("deleted", "database, -wal and -shm deleted", delete_database, "database-missing", ("restore",)),
    Case(
        "deleted-default-rules",
        "the same, rules at their default durations",
        delete_database,
        "database-missing",
        ("restore",),
        options={"fast_rules": False},
    ),
    Case(
        "lock-other",
        "write lock held 60 s by another process",
        lock_by_other_process,
        "write-lock-held",
        outcome="alerted",
        extra_config=rule_override("write-lock-held", threshold=5),
    ),
    Case(
        "lock-service",
        "write lock held by the service's own process",
        lock_by_service,
        "write-lock-stuck",
        ("restart",),
        extra_config=rule_override("write-lock-stuck", threshold=8),
        stack=ServiceLockStack,
    ),
    Case(
        "health-503", "health answers 503 for good", chaos(health_503_count=1_000_000), "health-failing", ("restart",)
    ),
    Case(
        "degraded-body", 'health 200 {"status":"degraded"}', chaos(health_degraded=True), "health-failing", ("restart",)
    ),
    Case(
        "slow-health",
        "health answers after 30 s",
        chaos(health_delay_seconds=30),
        "health-failing",
        ("restart",),
    ),
    Case(
        "slowloris-health",
        "slowloris health (1 byte / 0.5 s)",
        slowloris_health,
        "health-failing",
        ("restart",),
        stack=SlowlorisStack,
    ),
    Case(
        "slow-api",
        "API answers after 6 s, no deploy",
        chaos(api_delay_seconds=6),
        "slow-no-deploy",
        outcome="alerted",
        extra_config=rule_override("slow-no-deploy", for_="20s"),
    ),
    Case(
        "wal-growth",
        "WAL grows past a long reader",
        wal_growth,
        "wal-growing",
        outcome="alerted",
        extra_config=rule_override("wal-growing", for_="3s"),
    ),
)


@dataclass(frozen=True)
class Row:
    case: Case
    chosen: str
    detected: float | None
    verified: float | None
    rows_lost: int | None
    verdict: str
    note: str = ""

    def cells(self) -> list[str]:
        return [
            self.case.name,
            self.case.fault,
            expected(self.case),
            self.chosen,
            seconds(self.detected),
            seconds(self.verified),
            "?" if self.rows_lost is None else str(self.rows_lost),
            self.verdict + (f" ({self.note})" if self.note else ""),
        ]


def expected(case: Case) -> str:
    if case.rule is None:
        return "nothing"
    return describe(case.rule, list(case.actions), case.outcome)


def describe(rule: str, actions: list[str], outcome: str) -> str:
    return f"{rule}: {', '.join(actions) if actions else 'no action'} → {outcome}"


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def counts(stack: Stack) -> dict[str, int] | None:
    try:
        return stack.counts()
    except sqlite3.Error:
        return None


def rows_lost(before: dict[str, int], after: dict[str, int] | None) -> int | None:
    if after is None:
        return None
    return sum(max(0, before[table] - after[table]) for table in TABLES)


def run_case(case: Case, workdir: Path | None) -> Row:
    with contextlib.ExitStack() as cleanup:
        if workdir is None:
            root = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="rollbackd-faultmatrix-")))
        else:
            root = workdir / case.name
            root.mkdir(parents=True)
        stack = case.stack(root, extra_config=case.extra_config, **case.options)
        cleanup.callback(stack.tear_down)
        stack.set_up()
        stack.start_daemon()
        before = stack.counts()
        started = time.time()
        with contextlib.ExitStack() as fault:
            case.inject(stack, fault)
            try:
                incidents = settle(stack, case, started)
            except AssertionError as error:
                return Row(case, "timed out", None, None, None, "FAIL", str(error).splitlines()[0])
        return judge(case, stack, incidents, before, started)


def settle(stack: Stack, case: Case, started: float) -> list[Any]:
    """Wait for the outcome; return the incidents opened since the fault, oldest first."""

    def since() -> list[Any]:
        return [incident for incident in stack.incidents() if incident.opened_at >= started - 1]

    if case.outcome == "none":
        time.sleep(case.quiet_for)
        return since()
    if case.outcome == "hold":
        wait_for(lambda: stack.state() == "hold", "HOLD", timeout=case.timeout, step=1.0)
        return since()

    def closed() -> list[Any] | None:
        incidents = since()
        return incidents if incidents and incidents[0].outcome != "open" else None

    return wait_for(closed, "the first incident after the fault to close", timeout=case.timeout, step=0.5)


def judge(case: Case, stack: Stack, incidents: list[Any], before: dict[str, int], started: float) -> Row:
    after = counts(stack)
    lost = rows_lost(before, after)
    if not incidents:
        verdict = "PASS" if case.rule is None else "FAIL"
        return Row(case, "nothing", None, None, lost, verdict, "" if verdict == "PASS" else "no incident")
    chosen_incidents = incidents if case.outcome == "hold" else incidents[:1]  # hold: every recovery before it
    first, last = chosen_incidents[0], chosen_incidents[-1]
    actions = [action.action for incident in chosen_incidents for action in incident.actions]
    rules = sorted({incident.rule for incident in chosen_incidents}, key=[i.rule for i in chosen_incidents].index)
    chosen = describe("+".join(rules), actions, last.outcome)
    detected = first.opened_at - started
    verified = (
        (last.closed_at - first.opened_at) if last.closed_at is not None and last.outcome == "recovered" else None
    )
    problems = []
    if case.rule is None:
        problems.append("an incident for a healthy change")
    else:
        if rules != [case.rule]:
            problems.append(f"rule {'+'.join(rules)}, expected {case.rule}")
        if actions != list(case.actions):
            problems.append(f"actions {actions}, expected {list(case.actions)}")
        if last.outcome != case.outcome:
            problems.append(f"outcome {last.outcome}: {last.notes[:120]}")
    if lost is None or lost > 0:
        problems.append("rows lost" if lost else "database unreadable after the outcome")
    if case.outcome in ("recovered", "alerted") and stack.health() != 200:
        problems.append("service not healthy at the end")
    verdict = "FAIL" if problems else "PASS"
    return Row(case, chosen, detected, verified, lost, verdict, "; ".join(problems))


# The soak


@dataclass(frozen=True)
class SoakResult:
    seconds: float
    noise: dict[str, int]
    incidents: list[str]
    actions: list[tuple[str, str]]
    states: set[str]


def soak(duration: float, workdir: Path | None) -> SoakResult:
    """A healthy service under noise below every threshold: nothing may be done."""
    with contextlib.ExitStack() as cleanup:
        if workdir is None:
            root = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="rollbackd-faultmatrix-soak-")))
        else:
            root = workdir / "soak"
            root.mkdir(parents=True)
        stack = MatrixStack(root)
        cleanup.callback(stack.tear_down)
        stack.set_up()
        stack.start_daemon()
        noise = {"single 503": 0, "degraded for 1 s": 0, "API +150 ms": 0, "3 s write lock": 0}
        states: set[str] = set()
        started = time.monotonic()
        beat = 0
        with stack.client() as client:
            while time.monotonic() - started < duration:
                beat += 1
                if beat % 6 == 1:
                    client.post("/chaos", json={"health_503_count": 1})
                    noise["single 503"] += 1
                elif beat % 6 == 3:
                    client.post("/chaos", json={"api_delay_seconds": 0.15})
                    noise["API +150 ms"] += 1
                elif beat % 6 == 5:
                    client.post("/chaos", json={"health_degraded": True})
                    noise["degraded for 1 s"] += 1
                else:
                    client.delete("/chaos")
                if beat % 15 == 7:
                    stack.fault("lock", "--seconds", "3")
                    noise["3 s write lock"] += 1
                state = stack.state()
                if state:
                    states.add(state)
                time.sleep(1.0)
            client.delete("/chaos")
        incidents = [f"{incident.rule} → {incident.outcome}" for incident in stack.incidents()]
        return SoakResult(time.monotonic() - started, noise, incidents, stack.actions(), states)


# Output

HEADER = ["case", "fault", "expected rule: actions → outcome", "chosen rule: actions → outcome", "detected s",
          "verified s", "rows lost", "result"]  # fmt: skip


def markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def selected(only: str | None) -> list[Case]:
    if only is None:
        return list(CASES)
    names = [name.strip() for name in only.split(",") if name.strip()]
    if names == ["none"]:
        return []
    known = {case.name: case for case in CASES}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"fault_matrix.py: unknown case(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[name] for name in names]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help="run only these cases ('none': only the soak); cases: " + ", ".join(case.name for case in CASES),
    )
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="also run the noisy-but-healthy soak")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="build each stack under DIR/<case> and keep it (logs, state DB)"
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"  ({label}: {time.monotonic() - started:.0f} s wall)", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    cases = selected(args.only)
    failed = 0
    if cases:
        print(markdown_row(HEADER))
        print(markdown_row(["---"] * len(HEADER)), flush=True)
    for case in cases:
        with timed(case.name):
            try:
                row = run_case(case, args.keep)
            except Exception as error:  # noqa: BLE001 - a stack that would not come up is a FAIL row, not the end of the matrix
                row = Row(case, "error", None, None, None, "FAIL", f"{type(error).__name__}: {str(error)[:160]}")
        failed += row.verdict != "PASS"
        print(markdown_row(row.cells()), flush=True)
    if args.soak:
        result = soak(args.soak, args.keep)
        noise = ", ".join(f"{count}× {what}" for what, count in result.noise.items())
        print(f"\nsoak: {result.seconds:.0f} s of noise ({noise}); states seen: {', '.join(sorted(result.states))}")
        print(f"soak: {len(result.incidents)} incident(s) {result.incidents}, {len(result.actions)} action(s)")
        failed += bool(result.actions)
    if cases:
        print(f"\n{len(cases)} case(s) run; {failed} FAIL (the soak counts as one)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
