"""What rollbackd does to a service: run a plan (the executor), downgrade it with Alembic, quarantine a script,
and the operator's manual rollback."""
