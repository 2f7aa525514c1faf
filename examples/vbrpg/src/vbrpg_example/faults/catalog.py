"""Every fault by name: what it does, which runbook scenario it stands for, and (for the bad migrations)
which script file and fixed revision id it brings."""

from dataclasses import dataclass

# The first line of every fault script; `fault reset` removes exactly the files that carry it.
FAULT_MARKER = "# vbrpg-example fault:"


@dataclass(frozen=True)
class Fault:
    name: str
    summary: str
    scenario: str
    script: str | None = None

    @property
    def revision(self) -> str | None:
        """The fixed revision id of a migration fault: its script's name up to the first underscore."""
        return self.script.split("_", 1)[0] if self.script else None


FAULTS: tuple[Fault, ...] = (
    Fault(
        "fk-violation",
        "migration whose data step breaks a foreign key: upgrade fails, revision stays, table it made stays",
        "Scenario 1: migration fails with constraint violation",
        "9c1e4b2a7d30_add_room_tags.py",
    ),
    Fault(
        "schema-skew",
        "reversible migration applied, then its script removed: the database is ahead of the code",
        "Scenario 2: service won't start after migration",
        "5a7d3e9b1f24_add_player_display_name.py",
    ),
    Fault(
        "data-loss",
        "botched cleanup migration that deletes every room not in play and every player left without one",
        "Scenario 3: data loss after migration",
        "8e4b6c2d0a91_purge_stale_rooms.py",
    ),
    Fault(
        "drop-index",
        "migration that drops ix_game_room_participants_room_id: room lookups scan the table",
        "Scenario 4: performance degradation after deployment",
        "2d6f8a0c4e19_drop_redundant_participant_index.py",
    ),
    Fault(
        "bad-downgrade",
        "clean forward migration whose downgrade() raises: the rollback path is broken",
        "Database restore from backup: migration irreversible",
        "6b3f9e1d7c52_add_player_last_seen.py",
    ),
    Fault(
        "corrupt",
        "overwrite b-tree pages of a core table in the file: integrity_check fails, queries on it fail",
        "Database restore from backup: database corrupted",
    ),
    Fault(
        "lock",
        "hold the database's write lock (BEGIN IMMEDIATE plus a write) for N seconds",
        "Scenario 4: database locks",
    ),
    Fault(
        "kill",
        "SIGKILL the service process named by a pidfile, as a crash would",
        "Full service rollback: the service is down",
    ),
)


def fault_named(name: str) -> Fault:
    """Return the fault called `name`. Raise KeyError."""
    for fault in FAULTS:
        if fault.name == name:
            return fault
    raise KeyError(name)
