"""What rollbackd knows of the service it watches: its database, its Alembic scripts, its code version, how to
start and stop it, how to watch its migrations arrive, and the runbook's checklist that proves it healthy."""
