"""Projections declaring a table or collection another projection declares
(tests/test_owned_names.py): the same ``sa.Table`` object, the same name spelled in another
case, and the same names in a store of their own (no clash)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on


def _ledger(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("account", sa.Text, primary_key=True),
        sa.Column("total", sa.BigInteger, nullable=False),
    )


ledger = _ledger("owned_ledger")


class _Sums(Projection):
    @on("bank", "Deposited")
    def deposited(self, event: Event[dict], tx: Tx) -> None:
        table = type(self).tables[0]
        row = tx.get(table, event.aggregate_id)
        total = (row["total"] if row else 0) + int(event.payload["amount"])
        tx.upsert(table, {"account": event.aggregate_id, "total": total})


class Sums(_Sums):
    name = "owned_sums"
    tables = (ledger,)


class Copies(_Sums):
    """Declares ``Sums``' own table object."""

    name = "owned_copies"
    tables = (ledger,)


class Shouted(_Sums):
    """``OWNED_LEDGER``: the same table where names are compared without case (SQLite), another
    on PostgreSQL (SQLAlchemy quotes it)."""

    name = "owned_shouted"
    tables = (_ledger("OWNED_LEDGER"),)


class Elsewhere(_Sums):
    """The same table name in a store of its own."""

    name = "owned_elsewhere"
    tables = (_ledger("owned_ledger"),)
    store = "archive"


class _Docs(Projection):
    store = "docs"

    @on("bank", "Deposited")
    def deposited(self, event: Event[dict], tx: Any) -> None:
        collection = type(self).collections[0]
        tx.upsert(collection, {"_id": event.aggregate_id, "last": event.payload["amount"]})


class Inbox(_Docs):
    name = "owned_inbox"
    collections = ("owned_inbox",)


class InboxCopy(_Docs):
    name = "owned_inbox_copy"
    collections = ("owned_inbox",)


class InboxArchive(_Docs):
    name = "owned_inbox_archive"
    collections = ("owned_inbox",)
    store = "archive_docs"
