"""Two projections whose handlers fail some events deterministically, one in each of two
read stores (tests/test_parked_store_names.py): ``sql_parking`` in the SQL ``[store]``,
``doc_parking`` in a MongoDB store ``docs``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on

sql_parking = sa.Table(
    "sql_parking",
    sa.MetaData(),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)


class SqlParking(Projection):
    """Raises for an event whose payload says ``fail``."""

    name = "sql_parking"
    tables = (sql_parking,)
    partitions = 1

    @on("bank", "Put")
    def put(self, event: Event[dict], tx: Tx) -> None:
        if event.payload.get("fail"):
            raise ValueError("the sql handler refuses it")
        tx.upsert(sql_parking, {"id": event.aggregate_id, "n": event.payload["n"]})


class DocParking(Projection):
    """Raises for an event whose payload says ``fail``; writes the payload's ``email`` (its
    aggregate id by default), which a test may make unique: a duplicate is refused when the
    batch is written."""

    name = "doc_parking"
    store = "docs"
    collections = ("doc_parking",)
    partitions = 1

    @on("bank", "Put")
    def put(self, event: Event[dict], tx: Any) -> None:
        if event.payload.get("fail"):
            raise ValueError("the document handler refuses it")
        email = event.payload.get("email", event.aggregate_id)
        tx.upsert(
            "doc_parking", {"_id": event.aggregate_id, "n": event.payload["n"], "email": email}
        )
