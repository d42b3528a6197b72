"""A replay-safe projection for tests/test_replay.py: named indexes, a unique constraint and
CHECK constraints, so that repeated rebuilds prove the shadow's names never collide and the
swapped tables keep the live names."""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import BaseModel

from projections.api import Event, Projection, Tx, on

metadata = sa.MetaData()

last_deposit = sa.Table(
    "last_deposit",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False, index=True),
    sa.Column("ref", sa.Text, nullable=False, unique=True),
    sa.Column("tenant", sa.Text),
    sa.Index("last_deposit_amount_idx", "amount"),
    sa.CheckConstraint("seq > 0", name="last_deposit_seq_positive"),
    sa.CheckConstraint("amount > -1000000000"),  # named by the database
)


class Deposited(BaseModel):
    amount: int
    seq: int


class LastDeposit(Projection):
    """The latest deposit per account: applying an event again changes nothing."""

    name = "last_deposit"
    tables = (last_deposit,)
    replay_safe = True

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        tx.upsert(
            last_deposit,
            {
                "account": event.aggregate_id,
                "amount": event.payload.amount,
                "seq": event.payload.seq,
                "ref": f"{event.aggregate_id}#last",
                "tenant": event.tenant,
            },
        )
