"""Tables whose names one store resolves to one table and another to two
(tests/test_store_identifiers.py): ``"Orders"`` (quoted on PostgreSQL) and ``orders``,
``orders`` and ``public.orders`` / ``main.orders``, ``Straße`` and ``STRASSE``, and tables
named like the shadow or old table of another's."""

from __future__ import annotations

import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on


def _ledger(name: str, schema: str | None = None, **options: bool) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("account", sa.Text, primary_key=True),
        sa.Column("total", sa.BigInteger, nullable=False),
        schema=schema,
        **options,
    )


class _Sums(Projection):
    @on("bank", "Deposited")
    def deposited(self, event: Event[dict], tx: Tx) -> None:
        table = type(self).tables[0]
        row = tx.get(table, event.aggregate_id)
        total = (row["total"] if row else 0) + int(event.payload["amount"])
        tx.upsert(table, {"account": event.aggregate_id, "total": total})


class Quoted(_Sums):
    """``Orders``: SQLAlchemy quotes it on PostgreSQL, which keeps its case."""

    name = "quoted_orders"
    tables = (_ledger("Orders"),)


class Lower(_Sums):
    name = "lower_orders"
    tables = (_ledger("orders"),)


class Unquoted(_Sums):
    """``Orders`` declared ``quote=False``: PostgreSQL folds it to ``orders``."""

    name = "unquoted_orders"
    tables = (_ledger("Orders", quote=False),)


class Public(_Sums):
    name = "public_orders"
    tables = (_ledger("orders", "public"),)


class Main(_Sums):
    name = "main_orders"
    tables = (_ledger("orders", "main"),)


class Street(_Sums):
    name = "street"
    tables = (_ledger("Straße"),)


class Shouted(_Sums):
    """``STRASSE``: ``Straße`` without case in Python (casefold), another name in SQLite."""

    name = "shouted_street"
    tables = (_ledger("STRASSE"),)


class LowerShadow(_Sums):
    """``orders__rebuild``: the shadow of ``orders``, not of PostgreSQL's ``"Orders"``."""

    name = "lower_orders_shadow"
    tables = (_ledger("orders__rebuild"),)


class PublicOld(_Sums):
    """``public.orders__old``: the old table of ``orders`` on PostgreSQL."""

    name = "public_orders_old"
    tables = (_ledger("orders__old", "public"),)


# 66 bytes in UTF-8 (36 characters, within SQLAlchemy's 63): PostgreSQL keeps 62 of them,
# ``summe_`` and 28 ``é``, the 29th not fitting whole; so it keeps the same of ``LongA``'s
# and ``LongB``'s names (68 bytes): one table there.
LONG_PREFIX = "summe_" + "é" * 30


class LongA(_Sums):
    name = "long_a"
    tables = (_ledger(f"{LONG_PREFIX}_a"),)


class LongB(_Sums):
    name = "long_b"
    tables = (_ledger(f"{LONG_PREFIX}_b"),)


class LongSchema(_Sums):
    """A short table name in a schema whose name PostgreSQL would cut short."""

    name = "long_schema"
    tables = (_ledger("orders", LONG_PREFIX),)
