"""A replay-safe projection (PostgreSQL) whose index and constraint names are declared with
mixed case and ``quote=False`` (PostgreSQL folds them: ``ByTotal`` is ``bytotal``), and
whose second table, and an enum type of its, are in a schema declared so too (``Reports`` is
``reports``, made by the test): tests/test_replay_unquoted_indexes.py."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.sql.elements import quoted_name

from projections.api import Event, Projection, Tx, on
from projections.queries import Reader, query

SCHEMA = "Reports"  # made by the test as reports

metadata = sa.MetaData()

balances = sa.Table(
    "balances",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("deposits", sa.BigInteger, nullable=False),
    sa.Index("ByTotal", "total", quote=False),
    sa.CheckConstraint("deposits > 0", name=quoted_name("SomeDeposits", False)),
    sa.UniqueConstraint("account", "total", name=quoted_name("OneTotal", False)),
)

daily = sa.Table(
    "Daily",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column(
        "kind",
        sa.Enum("deposit", "refund", name="movement", schema=quoted_name(SCHEMA, False)),
        nullable=False,
    ),
    sa.Index("DailyByAmount", "amount", quote=False),
    schema=SCHEMA,
    quote=False,
    quote_schema=False,
)


class Deposited(BaseModel):
    amount: int
    seq: int


class UnquotedIndexes(Projection):
    """Each account's total, number of deposits and last deposit."""

    name = "unquoted_indexes"
    tables = (balances, daily)

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        row = tx.get(balances, event.aggregate_id)
        total = (row["total"] if row else 0) + event.payload.amount
        count = (row["deposits"] if row else 0) + 1
        tx.upsert(balances, {"account": event.aggregate_id, "total": total, "deposits": count})
        tx.upsert(
            daily,
            {"account": event.aggregate_id, "amount": event.payload.amount, "kind": "deposit"},
        )

    @query()
    def balance(self, read: Reader, account: str) -> dict[str, Any] | None:
        """The account's total, deposits and last deposit."""
        row = read.get(balances, account)
        last = read.get(daily, account)
        if row is None:
            return None
        return {"total": row["total"], "deposits": row["deposits"], "last": last and last["amount"]}
