"""A projection for tests/test_sqlite_wide_numeric.py: ``w_number`` keyed by a ``NUMERIC``
column (no scale, read as ``Decimal``) with a ``NUMERIC`` copy of its key, and ``w_scaled``
by a ``NUMERIC(30, 2)``, both tagged ``wide:{id}``; an event ``Copy`` of aggregate X writes
into ``w_seen`` what its handler's ``tx.get`` of the key ``payload["of"]`` found (in its
batch, or a later one)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on

metadata = sa.MetaData()

NUMBER = sa.Table(
    "w_number",
    metadata,
    sa.Column("id", sa.Numeric, primary_key=True),
    sa.Column("copy", sa.Numeric, nullable=False, index=True),
    sa.Column("value", sa.Text, nullable=False),
)
SCALED = sa.Table(
    "w_scaled",
    metadata,
    sa.Column("id", sa.Numeric(30, 2), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
SEEN = sa.Table(
    "w_seen",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("value", sa.Text),
)


class WideNumbers(Projection):
    name = "wide_numbers"
    tables = (NUMBER, SCALED, SEEN)
    key_tags = {"w_number": "wide:{id}", "w_scaled": "wide:{id}"}

    @on("wide", "ValueSet")
    def value_set(self, event: Event[dict], tx: Tx) -> None:
        number = Decimal(event.aggregate_id)
        value = event.payload["value"]  # type: ignore[index]
        tx.upsert(NUMBER, {"id": number, "copy": number, "value": value})
        tx.upsert(SCALED, {"id": number, "value": value})

    @on("wide", "Copy")
    def copy(self, event: Event[dict], tx: Tx) -> None:
        found: Any = tx.get(NUMBER, Decimal(event.payload["of"]))  # type: ignore[index]
        value = None if found is None else f"{found['id']}={found['value']}"
        tx.upsert(SEEN, {"id": event.aggregate_id, "value": value})
