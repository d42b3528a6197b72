"""A replay-safe projection whose PostgreSQL table numbers its rows from a standalone
sequence (``sa.Sequence`` as a column's default, not owned by the table), for
tests/test_replay_sequences.py: a dry run must make no sequence, for any role."""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import BaseModel

from projections.api import Event, Projection, Tx, on

metadata = sa.MetaData()

TICKETS = sa.Sequence("numbered_ticket_seq", metadata=metadata)

numbered = sa.Table(
    "numbered",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("ticket", sa.BigInteger, TICKETS, nullable=False),
)


class Deposited(BaseModel):
    amount: int
    seq: int


class Numbered(Projection):
    """The latest deposit per account, with a ticket number from the sequence."""

    name = "numbered"
    tables = (numbered,)
    replay_safe = True

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        tx.upsert(numbered, {"account": event.aggregate_id, "amount": event.payload.amount})


SHARED = sa.Sequence("shared_ticket_seq", metadata=metadata)
"""Declared by two tables, one of them twice: one sequence for the three columns."""

shared_first = sa.Table(
    "shared_first",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("ticket", sa.BigInteger, SHARED, nullable=False),
)
shared_second = sa.Table(
    "shared_second",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("ticket", sa.BigInteger, SHARED, nullable=False),
    sa.Column("receipt", sa.BigInteger, SHARED, nullable=False),
)


class Shared(Projection):
    """Each account's tickets from the one sequence ``shared_ticket_seq``."""

    name = "shared"
    tables = (shared_first, shared_second)
    replay_safe = True

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        tx.upsert(shared_first, {"account": event.aggregate_id})
        tx.upsert(shared_second, {"account": event.aggregate_id})


SEQUENCE_SCHEMA = "rm_sequences"
ELSEWHERE = sa.Sequence("elsewhere_ticket_seq", schema=SEQUENCE_SCHEMA, metadata=metadata)
"""In a schema of its own (made by the test first), the column's server default too."""

elsewhere = sa.Table(
    "elsewhere",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("ticket", sa.BigInteger, ELSEWHERE, server_default=ELSEWHERE.next_value()),
)


class Elsewhere(Projection):
    """Each account with a ticket from ``rm_sequences.elsewhere_ticket_seq``."""

    name = "elsewhere"
    tables = (elsewhere,)
    replay_safe = True

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        tx.upsert(elsewhere, {"account": event.aggregate_id})
