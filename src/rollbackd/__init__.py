"""rollbackd: the SQLite + Alembic rollback runbook, run by a daemon instead of a person at 3 a.m."""

__version__ = "0.1.0"
