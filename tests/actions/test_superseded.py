"""An action that had to wait for the service lock while another process held it to change the database is not
carried out: the policy saw the lock free up to a refresh before, so its evidence may be that command's own work
(a `rollbackd migrate` rolling back its data-loss deploy), and a second restore would lose what was written since.
A real holder in another process, a real restore rung, a real backup and database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from rollbackd.backup.snapshot import take_backup
from rollbackd.policy.conditions import Reading
from rollbackd.policy.engine import ActionContext, ActionOutcome, Decision
from rollbackd.policy.rules import effective_rules
from rollbackd.state.history import History
from rollbackd.state.state_dir import StateDir
from tests.backup.helpers import make_database, make_service
from tests.backup.test_restore import control_log, marker_control
from tests.support.executor import executor_for

HOLDER = """
import sys
from pathlib import Path
from rollbackd.state.service_lock import ServiceLock
lock = ServiceLock(Path(sys.argv[1]), "vbrpg", "rollbackd migrate", changes_database=True)
lock.acquire()
print("held", flush=True)
sys.stdin.readline()
lock.release()
"""


def test_a_restore_that_waited_for_a_migrate_holding_the_database_is_superseded_not_carried_out(
    tmp_path: Path,
) -> None:
    service = make_service(tmp_path, control=marker_control(tmp_path))
    make_database(service.database, players=5)
    take_backup(service, reason="manual")
    state_dir = StateDir(tmp_path / "state")
    state_dir.ensure()
    history = History(state_dir.history_db)
    history.upgrade()
    executor = executor_for(service, state_dir, history)
    rule = next(rule for rule in effective_rules(service) if rule.name == "data-loss")
    reading = Reading("rows_dropped", since=time.time(), explanation="rows dropped")
    context = ActionContext(service.name, 1, Decision(service.name, rule, reading, None))
    before = service.database.read_bytes()

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state_dir.root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

    async def waited_for_the_holder() -> ActionOutcome:
        assert holder.stdin is not None and holder.stdout is not None
        assert await asyncio.to_thread(holder.stdout.readline) == "held\n"
        action = asyncio.create_task(executor.execute(rule.ladder[0], context))
        await asyncio.sleep(1.0)  # the executor waits on the lock meanwhile
        assert not action.done()
        holder.stdin.write("\n")
        holder.stdin.flush()
        return await action

    try:
        outcome = asyncio.run(waited_for_the_holder())
    finally:
        holder.wait(timeout=30)
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()
        history.close()

    assert outcome.superseded and not outcome.ok, outcome
    assert "rollbackd migrate" in outcome.summary and "nothing was done" in outcome.summary
    assert service.database.read_bytes() == before  # not restored
    assert control_log(tmp_path) == []  # never stopped
    assert not list(service.database.parent.glob("*_corrupted_*"))

    # The lock's last holder is now this process's own action: a later decision is carried out as usual.
    later = ActionContext(service.name, 2, Decision(service.name, rule, reading, None))
    carried_out = asyncio.run(executor.execute(rule.ladder[0], later))
    assert not carried_out.superseded and carried_out.ok, carried_out
    assert control_log(tmp_path) == ["stop", "start"]
