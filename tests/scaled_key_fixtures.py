"""A projection for tests/test_numeric_key_rounding.py: ``s_price`` keyed by a
``NUMERIC(10, 2)`` column, ``s_whole`` by a ``NUMERIC(10)`` one (scale 0 on PostgreSQL),
each row's key read from the event's payload (``key``, else its aggregate id) as a
``Decimal``, as a handler does, and tagged ``price:{id}`` / ``whole:{id}`` (the tags the
default ``cache_tags`` of ``price`` and ``whole`` aggregates give). Before writing, the
handler reads the row of that key in its batch (``tx.get``) and keeps the value it saw in
``before``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on

metadata = sa.MetaData()

PRICE = sa.Table(
    "s_price",
    metadata,
    sa.Column("id", sa.Numeric(10, 2), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("before", sa.Text, nullable=True),
)

WHOLE = sa.Table(
    "s_whole",
    metadata,
    sa.Column("id", sa.Numeric(10), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("before", sa.Text, nullable=True),
)


class ScaledKeys(Projection):
    name = "scaled_keys"
    tables = (PRICE, WHOLE)
    key_tags = {"s_price": "price:{id}", "s_whole": "whole:{id}"}

    @on("keys", "PriceSet")
    def price_set(self, event: Event[dict], tx: Tx) -> None:
        payload: dict[str, Any] = event.payload  # type: ignore[assignment]
        table = WHOLE if event.aggregate_type == "whole" else PRICE
        key = Decimal(payload.get("key", event.aggregate_id))
        seen = tx.get(table, key)
        before = None if seen is None else seen["value"]
        tx.upsert(table, {"id": key, "value": payload["value"], "before": before})
