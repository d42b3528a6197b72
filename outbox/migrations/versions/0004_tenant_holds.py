"""rm_blocked_aggregates and rm_parked_events: the tenant of an aggregate's hold.

A parked event holds the later events of its aggregate, keyed by projection, source,
aggregate type and id. In a shared outbox with a tenant column every tenant numbers its
aggregates alike, so tenant A's parked ``order 1`` held tenant B's ``order 1`` too. The hold
is now keyed by the failed event's tenant as well (a primary-key column, so NOT NULL: ``''``
is no tenant), and each parked event records the tenant of the hold it is parked under, so
that ``readmodel parked retry`` and ``skip`` release that tenant's hold only.

The rows already there get ``''``, and a hold naming no tenant holds its aggregate in every
tenant (:func:`projections.store.hold_of`). That is the safe reading of a row written
before holds had tenants: the migration cannot tell which tenant's event was parked (the
parked event's tenant is in the event log, which need not live in this database), so the
hold keeps holding everything it held (the events of that aggregate id of every tenant,
in order) until the operator retries or skips it, as before; its parked events, also
``''``, are retried or skipped together, as before. Matching it to one tenant would let the
others' held events run past their parked ones. For a source without tenants ``''`` is
exactly what the events carry, so nothing changes there.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PRIMARY_KEY = "rm_blocked_aggregates_pkey"
KEY_BEFORE = ["projection", "source", "aggregate_type", "aggregate_id"]
KEY = ["projection", "source", "tenant", "aggregate_type", "aggregate_id"]


def tables(metadata: sa.MetaData) -> list[sa.Table]:
    """This revision creates no table (it adds columns and a primary key column)."""
    return []


def _tenant() -> sa.Column[str]:
    return sa.Column("tenant", sa.Text, nullable=False, server_default="")


def _blocked_before() -> sa.Table:
    """rm_blocked_aggregates as 0001 made it, for SQLite's copy of the table (SQLite cannot
    change a primary key in place); its key named so that it can be dropped."""
    return sa.Table(
        "rm_blocked_aggregates",
        sa.MetaData(),
        sa.Column("projection", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("aggregate_type", sa.Text, nullable=False),
        sa.Column("aggregate_id", sa.Text, nullable=False),
        sa.Column("since_position", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint(*KEY_BEFORE, name=PRIMARY_KEY),
    )


def upgrade() -> None:
    with op.batch_alter_table("rm_blocked_aggregates", copy_from=_blocked_before()) as batch:
        batch.add_column(_tenant())
        batch.drop_constraint(PRIMARY_KEY, type_="primary")
        batch.create_primary_key(PRIMARY_KEY, KEY)
    op.add_column("rm_parked_events", _tenant())


def downgrade() -> None:
    """Back to one hold per aggregate of a projection and source: the earliest of its
    tenants' holds is kept, and holds the aggregate of every tenant again."""
    op.execute(
        "DELETE FROM rm_blocked_aggregates WHERE EXISTS (SELECT 1 FROM rm_blocked_aggregates o "
        "WHERE o.projection = rm_blocked_aggregates.projection "
        "AND o.source = rm_blocked_aggregates.source "
        "AND o.aggregate_type = rm_blocked_aggregates.aggregate_type "
        "AND o.aggregate_id = rm_blocked_aggregates.aggregate_id "
        "AND (o.since_position < rm_blocked_aggregates.since_position "
        "OR (o.since_position = rm_blocked_aggregates.since_position "
        "AND o.tenant < rm_blocked_aggregates.tenant)))"
    )
    with op.batch_alter_table("rm_parked_events") as batch:
        batch.drop_column("tenant")
    with op.batch_alter_table("rm_blocked_aggregates") as batch:
        batch.drop_constraint(PRIMARY_KEY, type_="primary")
        batch.drop_column("tenant")
        batch.create_primary_key(PRIMARY_KEY, KEY_BEFORE)
