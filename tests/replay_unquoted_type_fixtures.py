"""A replay-safe projection (PostgreSQL) whose enum type and standalone sequence have their
own names declared with capitals and ``quote=False`` (PostgreSQL folds them: ``Movement``
is ``movement``, ``Tick`` is ``tick``); a second sequence is in a schema declared so too
(``Reports`` is ``reports``, made by the test). A second projection's table takes the same
type and sequence: tests/test_unquoted_type_names.py."""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.sql.elements import quoted_name

from projections.api import Event, Projection, Tx, on

metadata = sa.MetaData()

MOVEMENT = sa.Enum("deposit", "refund", name="Movement", quote=False)
TICK = sa.Sequence("Tick", quote=False, metadata=metadata)
RECEIPT = sa.Sequence(
    "Receipt", schema=quoted_name("Reports", False), quote=False, metadata=metadata
)

ticks = sa.Table(
    "ticks",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("kind", MOVEMENT, nullable=False),
    sa.Column("ticket", sa.BigInteger, TICK, nullable=False),
    sa.Column("receipt", sa.BigInteger, RECEIPT, server_default=RECEIPT.next_value()),
)


class Deposited(BaseModel):
    amount: int
    seq: int


class UnquotedTypes(Projection):
    """The latest deposit per account, its kind, a ticket and a receipt number."""

    name = "unquoted_types"
    tables = (ticks,)
    replay_safe = True

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        tx.upsert(
            ticks,
            {"account": event.aggregate_id, "amount": event.payload.amount, "kind": "deposit"},
        )


refunds = sa.Table(
    "refunds",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("kind", MOVEMENT, nullable=False),
    sa.Column("ticket", sa.BigInteger, TICK, nullable=False),
)


class UnquotedRefunds(Projection):
    """Each account that deposited, with a kind and a ticket of the same type and sequence."""

    name = "unquoted_refunds"
    tables = (refunds,)
    replay_safe = True

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        tx.upsert(refunds, {"account": event.aggregate_id, "kind": "refund"})
