"""Alembic environment for readmodel's own tables, run by ``outbox/migrate.py`` (no alembic.ini).

Online, ``outbox/migrate.py`` passes a connection that is already inside a transaction
holding the migration lock; Alembic runs every revision in it and the caller commits.
Offline (``readmodel migrate --sql``) the DDL is rendered for ``config.attributes["dialect"]``.
"""

from __future__ import annotations

from alembic import context

config = context.config
options = {
    "version_table": config.attributes["version_table"],
    "transaction_per_migration": False,
}

if context.is_offline_mode():
    context.configure(dialect_name=config.attributes["dialect"], literal_binds=True, **options)
else:
    context.configure(connection=config.attributes["connection"], **options)

with context.begin_transaction():
    context.run_migrations()
