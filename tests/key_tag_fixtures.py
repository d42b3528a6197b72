"""A projection keyed by each kind of column, for tests/test_key_tag_spellings.py: table
``k_<kind>`` keeps one row per aggregate of type ``<kind>`` (its key read from the aggregate
id, as a handler does), and its cached gets are tagged ``<kind>:{id}``, the tag the default
``cache_tags`` of that aggregate's events gives."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on

metadata = sa.MetaData()

KINDS: dict[str, tuple[Any, Callable[[str], Any]]] = {
    "integer": (sa.Integer, int),
    "numeric": (sa.Numeric(10, 2), Decimal),
    "float": (sa.Float, float),
    "uuid": (sa.Uuid, uuid.UUID),
    "timestamp": (sa.DateTime, datetime.fromisoformat),
    "timestamptz": (sa.DateTime(timezone=True), datetime.fromisoformat),
    "date": (sa.Date, date.fromisoformat),
    "time": (sa.Time, time.fromisoformat),
    "text": (sa.Text, str),
}

TABLES = {
    kind: sa.Table(
        f"k_{kind}",
        metadata,
        sa.Column("id", column_type, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    for kind, (column_type, _) in KINDS.items()
}


class TypedKeys(Projection):
    name = "typed_keys"
    tables = tuple(TABLES.values())
    key_tags = {f"k_{kind}": f"{kind}:{{id}}" for kind in KINDS}

    @on("keys", "ValueSet")
    def value_set(self, event: Event[dict], tx: Tx) -> None:
        kind = event.aggregate_type
        key = KINDS[kind][1](event.aggregate_id)
        tx.upsert(TABLES[kind], {"id": key, "value": event.payload["value"]})  # type: ignore[index]
