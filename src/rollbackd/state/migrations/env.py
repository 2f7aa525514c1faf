"""Alembic environment for rollbackd's own state database (history, service states, deploys).

Run in-process by ``History.upgrade()`` with a connection passed in ``config.attributes``; never by hand.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
