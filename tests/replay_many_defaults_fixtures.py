"""A projection whose tables declare many kinds of server default (functions, casts, JSONB,
arrays, enums in and out of their table's schema, a function in another schema, serial,
identity, sequence and computed columns), in ``public`` and in schema ``sales``, under
names with capitals and ``%`` (tests/test_replay_many_defaults.py): a rebuild of what
nobody changed by hand must warn of nothing and leave the column types as they are. The
test makes the schemas ``sales`` and ``util`` (with ``util.make_code()``) first."""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.dialects import postgresql as pg

from projections.api import Event, Projection, Tx, on

metadata = sa.MetaData()

defaults = sa.Table(
    "Plain%Defaults",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("created", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("stamped", sa.DateTime, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
    sa.Column("n", sa.Integer, server_default="0", nullable=False),
    sa.Column("u", pg.UUID, server_default=sa.text("gen_random_uuid()")),
    sa.Column("doc", pg.JSONB, server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column("doc2", pg.JSONB, server_default="{}"),
    sa.Column("tags", pg.ARRAY(sa.Text), server_default=sa.text("'{}'::text[]")),
    sa.Column("pair", pg.ARRAY(sa.Integer), server_default=sa.text("ARRAY[1, 2]")),
    sa.Column("n_plus", sa.Integer, sa.Computed("n + 1", persisted=True)),
    sa.Column("code", sa.Text, server_default=sa.text("util.make_code()")),
    sa.Column("price", sa.Numeric(10, 2), server_default="1.50"),
    sa.Column("flag", sa.Boolean, server_default=sa.true()),
    sa.Column("span", sa.Interval, server_default=sa.text("'1 day'::interval")),
    sa.Column("day", sa.Date, server_default=sa.text("CURRENT_DATE")),
    sa.Column("seq", sa.Integer, nullable=False),
)

orders = sa.Table(
    "Orders%s",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account", sa.Text, unique=True, nullable=False),
    sa.Column("status", sa.Enum("new", "old", name="status", schema="sales"), server_default="new"),
    sa.Column("public_status", sa.Enum("a", "b", name="public_status"), server_default="a"),
    sa.Column("ident", sa.BigInteger, sa.Identity()),
    sa.Column(
        "numbered",
        sa.Integer,
        sa.Sequence("orders_numbered", schema="sales"),
        server_default=sa.text("nextval('sales.orders_numbered')"),
    ),
    sa.Column("code", sa.Text, server_default=sa.text("util.make_code()")),
    sa.Column("at", sa.DateTime, server_default=sa.text("(now() AT TIME ZONE 'utc')")),
    sa.Column("seq", sa.Integer, nullable=False),
    schema="sales",
)

serials = sa.Table(
    "serials",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("account", sa.Text, unique=True, nullable=False),
    sa.Column("kind", sa.Enum("x", "y", name="kind"), server_default="x", nullable=False),
    sa.Column("grade", sa.Enum("p", "q", name="grade", schema="sales"), server_default="p"),
    sa.Column("seq", sa.Integer, nullable=False),
)


class Deposited(BaseModel):
    amount: int
    seq: int


class ManyDefaults(Projection):
    """One row per account in each table; the other columns are the tables' defaults."""

    name = "many_defaults"
    tables = (defaults, orders, serials)
    replay_safe = True

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        n = int(event.aggregate_id.split("-")[1])
        row = {"account": event.aggregate_id, "seq": event.payload.seq}
        tx.upsert(defaults, row)
        tx.upsert(orders, {"id": n, **row})
        tx.upsert(serials, {"id": n, **row})
