"""A projection whose tags are spelled by hand through each public tag API, for
tests/test_tag_api_spellings.py: a ``key_tags`` function and a format string, ``@query``
tags, ``tx.invalidate(...)`` and its own ``cache_tags`` and a result's ``cache_tags``, each
spelling the numbers it holds as they come (``price:42.00``, ``amount:44.0``, ``price:46``)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from outbox.envelope import Envelope
from projections.api import Event, Projection, Tx, on
from projections.queries import Reader, query

metadata = sa.MetaData()

prices = sa.Table(
    "t_prices",
    metadata,
    sa.Column("id", sa.Numeric(10, 2), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
amounts = sa.Table(
    "t_amounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


class TagApis(Projection):
    name = "tag_apis"
    tables = (prices, amounts)
    key_tags = {"t_prices": lambda key: [f"price:{key['id']}"], "t_amounts": "amount:{id}"}

    @on("tags", "PriceSet")
    def price_set(self, event: Event[dict], tx: Tx) -> None:
        """Aggregate ``price:<id>``: its row, invalidated by the default ``cache_tags``."""
        tx.upsert(prices, {"id": Decimal(event.aggregate_id), "value": event.payload["value"]})

    @on("tags", "AmountSet")
    def amount_set(self, event: Event[dict], tx: Tx) -> None:
        """Aggregate ``batch:<n>`` sets the amount its payload names (a JSON float)."""
        amount = event.payload["id"]
        tx.upsert(amounts, {"id": int(amount), "value": event.payload["value"]})
        tx.invalidate(f"amount:{amount}")

    @on("tags", "Relabelled")
    def relabelled(self, event: Event[dict], tx: Tx) -> None:
        """Aggregate ``sku:<code>`` sets the price its payload names, as text (``46.00``)."""
        price = Decimal(event.payload["price_id"])
        tx.upsert(prices, {"id": price, "value": event.payload["value"]})

    def cache_tags(self, event: Envelope) -> Iterable[str]:
        if event.aggregate_type == "sku":
            return [f"price:{event.payload['price_id']}"]
        return super().cache_tags(event)

    @query("price_of", tags=lambda price_id: [f"price:{price_id}"])
    def price_of(self, read: Reader, price_id: Decimal) -> Any:
        row = read.get(prices, price_id)
        return None if row is None else row["value"]

    @query("price_row", cache_tags=lambda row: [f"price:{row['id']}"])
    def price_row(self, read: Reader, number: int) -> Any:
        """A result's ``cache_tags``: the row's NUMERIC id comes back as text (``47.00``)."""
        return read.get(prices, number)

    @query("price_by_number", tags=lambda number: [f"price:{number}"])
    def price_by_number(self, read: Reader, number: int) -> Any:
        row = read.get(prices, number)
        return None if row is None else row["value"]
