"""A replay-safe projection whose PostgreSQL tables have names with ``%`` (``%s`` too), a
double quote and capitals, some in a schema whose name has a ``%``
(tests/test_replay_names.py): statement text and catalog parameters must name them alike.
One has a foreign key to a table outside the projection (:data:`accounts`, which the test
makes), another to a table of the projection."""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import BaseModel

from projections.api import Event, Projection, Tx, on

ODD_SCHEMA = "shop%s 2024"

metadata = sa.MetaData(naming_convention={"ix": "ix_%(table_name)s_%(column_0_name)s"})

accounts = sa.Table(  # not the projection's
    "Accounts%s",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    schema=ODD_SCHEMA,
)

sales = sa.Table(
    "sales%2024",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False, index=True),
    sa.CheckConstraint("seq > 0", name="sales%2024_seq_positive"),
)

rates = sa.Table(
    "rate%s",
    metadata,
    sa.Column("account", sa.Text, sa.ForeignKey(sales.c.account), primary_key=True),
    sa.Column("rate%s", sa.BigInteger, nullable=False),
)

quoted = sa.Table(
    'Odd"Name%d',
    metadata,
    sa.Column("account", sa.Text, sa.ForeignKey(accounts.c.account), primary_key=True),
    sa.Column("Seq", sa.Integer, nullable=False, unique=True),
)

schema_sales = sa.Table(
    "Orders%2024",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False, index=True),
    schema=ODD_SCHEMA,
)

schema_quoted = sa.Table(
    'Odd"Name%s',
    metadata,
    sa.Column("account", sa.Text, sa.ForeignKey(schema_sales.c.account), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    schema=ODD_SCHEMA,
)

TABLES = (sales, rates, quoted, schema_sales, schema_quoted)


class Deposited(BaseModel):
    amount: int
    seq: int


class OddNames(Projection):
    """The latest deposit per account in every table: applying an event again changes
    nothing."""

    name = "odd_names"
    tables = TABLES
    replay_safe = True

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        account, amount, seq = event.aggregate_id, event.payload.amount, event.payload.seq
        tx.upsert(sales, {"account": account, "amount": amount, "seq": seq})
        tx.upsert(rates, {"account": account, "rate%s": amount * 2})
        tx.upsert(quoted, {"account": account, "Seq": seq * 1000 + int(account.split("-")[1])})
        tx.upsert(schema_sales, {"account": account, "amount": amount})
        tx.upsert(schema_quoted, {"account": account, "seq": seq})
