"""Baseline: the tables readmodel 0.1 created with ``create_all``.

The event log (rm_event_log, rm_log_heads, rm_parked) and the store's bookkeeping
(rm_checkpoints, rm_blocked_aggregates, rm_parked_events, rm_failures). A read store
from before migrations already holds some or all of them: ``outbox/migrate.py``
checks their columns against :func:`tables` first, and this revision then creates
only the missing ones, so adopting such a database stamps it at 0001.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)
Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")
NOW = sa.func.current_timestamp()


def tables(metadata: sa.MetaData) -> list[sa.Table]:
    """The tables of this revision, frozen (later model changes get their own revision)."""
    return [
        sa.Table(
            "rm_event_log",
            metadata,
            sa.Column("source", sa.Text, primary_key=True),
            sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("event_id", sa.Text, nullable=False),
            sa.Column("tenant", sa.Text),
            sa.Column("aggregate_type", sa.Text, nullable=False),
            sa.Column("aggregate_id", sa.Text, nullable=False),
            sa.Column("key_hash", sa.Integer, nullable=False),
            sa.Column("event_type", sa.Text, nullable=False),
            sa.Column("payload", Json, nullable=False),
            sa.Column("headers", Json),
            sa.Column("occurred_at", Timestamp),
            sa.Column("recorded_at", Timestamp, nullable=False, server_default=NOW),
            sa.UniqueConstraint("source", "event_id", name="rm_event_log_event_id_key"),
        ),
        sa.Table(
            "rm_log_heads",
            metadata,
            sa.Column("source", sa.Text, primary_key=True),
            sa.Column("head", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("updated_at", Timestamp),
        ),
        sa.Table(
            "rm_parked",
            metadata,
            sa.Column("id", Id, primary_key=True),
            sa.Column("kind", sa.Text, nullable=False),
            sa.Column("source", sa.Text, nullable=False),
            sa.Column("projection", sa.Text),
            sa.Column("event_id", sa.Text),
            sa.Column("position", sa.BigInteger),
            sa.Column("aggregate_type", sa.Text),
            sa.Column("aggregate_id", sa.Text),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("detail", sa.Text),
            sa.Column("raw", Json),
            sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
            sa.Column("status", sa.Text, nullable=False, server_default="parked"),
            sa.Column("parked_at", Timestamp, nullable=False, server_default=NOW),
            sa.Column("resolved_at", Timestamp),
            sa.Index("rm_parked_status_idx", "status", "kind", "source"),
        ),
        sa.Table(
            "rm_checkpoints",
            metadata,
            sa.Column("projection", sa.Text, primary_key=True),
            sa.Column("source", sa.Text, primary_key=True),
            sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("position", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("updated_at", Timestamp),
        ),
        sa.Table(
            "rm_blocked_aggregates",
            metadata,
            sa.Column("projection", sa.Text, primary_key=True),
            sa.Column("source", sa.Text, primary_key=True),
            sa.Column("aggregate_type", sa.Text, primary_key=True),
            sa.Column("aggregate_id", sa.Text, primary_key=True),
            sa.Column("since_position", sa.BigInteger, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("detail", sa.Text),
            sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        ),
        sa.Table(
            "rm_parked_events",
            metadata,
            sa.Column("id", Id, primary_key=True),
            sa.Column("projection", sa.Text, nullable=False),
            sa.Column("source", sa.Text, nullable=False),
            sa.Column("position", sa.BigInteger, nullable=False),
            sa.Column("event_id", sa.Text, nullable=False),
            sa.Column("aggregate_type", sa.Text, nullable=False),
            sa.Column("aggregate_id", sa.Text, nullable=False),
            sa.Column("event_type", sa.Text, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("detail", sa.Text),
            sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
            sa.Column("status", sa.Text, nullable=False, server_default="parked"),
            sa.Column("parked_at", Timestamp, nullable=False, server_default=NOW),
            sa.Column("resolved_at", Timestamp),
            sa.UniqueConstraint("projection", "source", "position", name="rm_parked_events_key"),
            sa.Index(
                "rm_parked_events_aggregate_idx", "projection", "aggregate_type", "aggregate_id"
            ),
        ),
        sa.Table(
            "rm_failures",
            metadata,
            sa.Column("projection", sa.Text, primary_key=True),
            sa.Column("source", sa.Text, primary_key=True),
            sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("last_error", sa.Text),
            sa.Column("updated_at", Timestamp),
        ),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    existing = set() if context.is_offline_mode() else set(sa.inspect(bind).get_table_names())
    for table in tables(sa.MetaData()):
        if table.name not in existing:
            table.create(bind)


def downgrade() -> None:
    for table in reversed(tables(sa.MetaData())):
        op.drop_table(table.name)
