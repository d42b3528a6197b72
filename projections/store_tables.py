"""The worker's own tables in a read store: checkpoints, failures, blocked aggregates, parked
events and the invalidation journal (created and upgraded by ``readmodel migrate``)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
Timestamp = sa.DateTime(timezone=True)

checkpoints = sa.Table(
    "rm_checkpoints",
    metadata,
    sa.Column("projection", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("position", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", Timestamp),
)

blocked = sa.Table(  # tenant: added by migration 0004 ('' for none, see projections.store)
    "rm_blocked_aggregates",
    metadata,
    sa.Column("projection", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("aggregate_type", sa.Text, nullable=False),
    sa.Column("aggregate_id", sa.Text, nullable=False),
    sa.Column("since_position", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("tenant", sa.Text, nullable=False, server_default=""),
    sa.PrimaryKeyConstraint(
        "projection",
        "source",
        "tenant",
        "aggregate_type",
        "aggregate_id",
        name="rm_blocked_aggregates_pkey",
    ),
)

parked_events = sa.Table(
    "rm_parked_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
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
    sa.Column("parked_at", Timestamp, nullable=False, server_default=sa.func.current_timestamp()),
    sa.Column("resolved_at", Timestamp),
    # The tenant of the hold it is parked under, '' for none (migration 0004).
    sa.Column("tenant", sa.Text, nullable=False, server_default=""),
    sa.UniqueConstraint("projection", "source", "position", name="rm_parked_events_key"),
    sa.Index("rm_parked_events_aggregate_idx", "projection", "aggregate_type", "aggregate_id"),
)

failures = sa.Table(
    "rm_failures",
    metadata,
    sa.Column("projection", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("updated_at", Timestamp),
)


invalidations = sa.Table(  # created by migration 0002 (outbox/migrations/versions)
    "rm_invalidations",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("projection", sa.Text, nullable=False),
    sa.Column("tags", sa.Text, nullable=False),  # a JSON list
    sa.Column("created_at", Timestamp, nullable=False, server_default=sa.func.current_timestamp()),
)
