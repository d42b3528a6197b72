"""A replay-safe projection whose PostgreSQL tables are declared with mixed-case names and
``quote=False`` (PostgreSQL folds them to lower case), one in a schema declared so too, with
a foreign key, a named index and a query of its own (tests/test_replay_unquoted_names.py)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

from projections.api import Event, Projection, Tx, on
from projections.queries import Reader, query

SCHEMA = "ShopData"  # made by the test as shopdata

metadata = sa.MetaData()

totals = sa.Table(
    "OrderTotals",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Index("OrderTotals_total_idx", "total"),
    quote=False,
)

lasts = sa.Table(
    "LastDeposits",
    metadata,
    sa.Column("account", sa.Text, sa.ForeignKey(totals.c.account), primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    schema=SCHEMA,
    quote=False,
    quote_schema=False,
)

TABLES = (totals, lasts)


class Deposited(BaseModel):
    amount: int
    seq: int


class UnquotedTotals(Projection):
    """Each account's total and last deposit."""

    name = "unquoted_totals"
    tables = TABLES

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        row = tx.get(totals, event.aggregate_id)
        total = (row["total"] if row else 0) + event.payload.amount
        tx.upsert(totals, {"account": event.aggregate_id, "total": total})
        tx.upsert(lasts, {"account": event.aggregate_id, "amount": event.payload.amount})

    @query()
    def total(self, read: Reader, account: str) -> dict[str, Any] | None:
        """The account's total and last deposit."""
        row = read.get(totals, account)
        last = read.get(lasts, account)
        return None if row is None else {"total": row["total"], "last": last and last["amount"]}
