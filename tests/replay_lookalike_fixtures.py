"""A projection whose live table is named like another's shadow: ``last_deposit__rebuild``
(the shadow name of ``last_deposit``, tests/replay_fixtures.py) holds a copy of each
account's deposits count. Loaded beside ``last_deposit`` it is refused
(tests/test_replay_rebuild_names.py): ``last_deposit``'s rebuild would build into it."""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import BaseModel

from projections.api import Event, Projection, Tx, on

metadata = sa.MetaData()

deposit_counts = sa.Table(
    "last_deposit__rebuild",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("deposits", sa.BigInteger, nullable=False),
)


class Deposited(BaseModel):
    amount: int
    seq: int


class DepositCounts(Projection):
    """Deposits per account (the last seq seen: events come in order per account)."""

    name = "deposit_counts"
    tables = (deposit_counts,)
    replay_safe = True

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        tx.upsert(deposit_counts, {"account": event.aggregate_id, "deposits": event.payload.seq})
