"""A projection for tests/test_cache_key_spellings.py: ``n_number`` keyed by a NUMERIC
column (no scale), ``n_moment`` by a naive ``DateTime``, ``n_instant`` by an aware one
(PostgreSQL's ``timestamptz``), each row's key read from its aggregate id (as a handler
does), tagged ``number:{id}`` / ``moment:{id}`` / ``instant:{id}`` (the tags the default
``cache_tags`` of those aggregates' events give); ``n_counted`` is tagged by a
``key_tags`` function, and read by the query ``counted`` tagged by a ``tags=`` function,
both counting their calls in :data:`TAG_CALLS`."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on
from projections.queries import query

metadata = sa.MetaData()

NUMBER = sa.Table(
    "n_number",
    metadata,
    sa.Column("id", sa.Numeric, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
MOMENT = sa.Table(
    "n_moment",
    metadata,
    sa.Column("id", sa.DateTime, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
INSTANT = sa.Table(
    "n_instant",
    metadata,
    sa.Column("id", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
COUNTED = sa.Table(
    "n_counted",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

TAG_CALLS: list[dict[str, Any]] = []
"""The keys ``n_counted``'s tag functions were called with (emptied by the test)."""


def counted_tags(key: dict[str, Any]) -> list[str]:
    TAG_CALLS.append(key)
    return [f"counted:{key['id']}"]


def counted_query_tags(counted_id: str) -> list[str]:
    return counted_tags({"id": counted_id})


class SpelledKeys(Projection):
    name = "spelled_keys"
    tables = (NUMBER, MOMENT, INSTANT, COUNTED)
    key_tags = {
        "n_number": "number:{id}",
        "n_moment": "moment:{id}",
        "n_instant": "instant:{id}",
        "n_counted": counted_tags,
    }

    @query(tags=counted_query_tags)
    def counted(self, read: Any, counted_id: str) -> Any:
        return read.get("n_counted", counted_id)

    @on("keys", "ValueSet")
    def value_set(self, event: Event[dict], tx: Tx) -> None:
        kind, text = event.aggregate_type, event.aggregate_id
        value = event.payload["value"]  # type: ignore[index]
        if kind == "number":
            tx.upsert(NUMBER, {"id": Decimal(text), "value": value})
        elif kind == "moment":
            tx.upsert(MOMENT, {"id": datetime.fromisoformat(text), "value": value})
        elif kind == "instant":
            tx.upsert(INSTANT, {"id": datetime.fromisoformat(text), "value": value})
        else:
            tx.upsert(COUNTED, {"id": text, "value": value})
