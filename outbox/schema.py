"""Tables readmodel keeps in the read store: the event log, its heads, and parked events.

The read store gets them from migrations (:mod:`outbox.migrate`); these definitions are what
the code reads and writes, and a test checks that they equal the latest revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from outbox.catalog_names import create_missing

metadata = sa.MetaData()

JsonColumn = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)

event_log = sa.Table(
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
    sa.Column("payload", JsonColumn, nullable=False),
    sa.Column("headers", JsonColumn),
    sa.Column("occurred_at", Timestamp),
    sa.Column("recorded_at", Timestamp, nullable=False, server_default=sa.func.current_timestamp()),
    sa.UniqueConstraint("source", "event_id", name="rm_event_log_event_id_key"),
)

log_heads = sa.Table(
    "rm_log_heads",
    metadata,
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("head", sa.BigInteger, nullable=False, server_default="0"),
    # The last append's time (set by appends only: see outbox.keepers).
    sa.Column("updated_at", Timestamp),
    # The source's binary_ids rule, which made its aggregate ids (NULL: none recorded yet).
    sa.Column("binary_ids", sa.Text),
)

parked = sa.Table(
    "rm_parked",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("projection", sa.Text),
    sa.Column("event_id", sa.Text),
    sa.Column("position", sa.BigInteger),
    sa.Column("aggregate_type", sa.Text),
    sa.Column("aggregate_id", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("raw", JsonColumn),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("status", sa.Text, nullable=False, server_default="parked"),
    sa.Column("parked_at", Timestamp, nullable=False, server_default=sa.func.current_timestamp()),
    sa.Column("resolved_at", Timestamp),
    sa.Index("rm_parked_status_idx", "status", "kind", "source"),
)

PARKED_OUTBOX_ROW = "outbox_row"


DDL_LOCK = 0x52_4D_44_44_4C  # "RMDDL": serializes readmodel's DDL (and migrations) on PostgreSQL


def create_tables(engine: sa.Engine, tables: list[sa.Table]) -> None:
    """Create missing ``tables``; safe when several processes start at once.

    PostgreSQL's ``CREATE TABLE IF NOT EXISTS`` is not safe against a concurrent
    creator (it can fail on ``pg_type``), so creators take a transaction-scoped
    advisory lock first. On SQLite the transaction takes the write lock at ``BEGIN``: a
    deferred one that read the schema could not upgrade while another process writes.
    A table is looked up as the catalog holds its names (:mod:`outbox.catalog_names`: one
    declared ``quote=False`` with capitals was made again at every start, and failed).
    """
    with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(DDL_LOCK)))
        for table in sa.schema.sort_tables(tables):  # referenced tables first
            create_missing(conn, table)
