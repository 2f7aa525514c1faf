"""Alembic environment for rollbackd's own state database (history, service states, deploys).

Run in-process by ``History.upgrade()`` with a connection passed in ``config.attributes``; never by hand.
"""

from alembic import context

from rollbackd.state.history import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
