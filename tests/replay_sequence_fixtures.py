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
