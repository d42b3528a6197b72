"""A document projection whose ``_id`` is a Decimal128 read off the aggregate id, for
tests/test_document_decimal_keys.py: collection ``doc_prices``, tagged ``price:{_id}``; a
query tagged from its argument and a handler's ``tx.invalidate(...)`` spell the number as
they hold it (``price:2.50``, ``price:3.0``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bson import Decimal128

from projections.api import Event, Projection, on
from projections.queries import Reader, query


class DocPrices(Projection):
    name = "doc_prices"
    store = "docs"
    collections = ("doc_prices",)
    key_tags = {"doc_prices": "price:{_id}"}

    @on("prices", "PriceSet")
    def price_set(self, event: Event[dict], tx: Any) -> None:
        """The document of the aggregate's number, however the event spells it (``1.5`` finds
        the ``_id`` ``1.50``, which keeps its form)."""
        key = Decimal128(event.aggregate_id)
        found = tx.get("doc_prices", key)
        document = {"_id": key} if found is None else found
        tx.upsert("doc_prices", {**document, "value": event.payload["value"]})

    @on("prices", "Repriced")
    def repriced(self, event: Event[dict], tx: Any) -> None:
        """Aggregate ``batch:<n>`` sets the price its payload names, as text (``3.0``)."""
        price = event.payload["id"]
        found = tx.get("doc_prices", Decimal128(price))
        document = {"_id": Decimal128(price)} if found is None else found
        tx.upsert("doc_prices", {**document, "value": event.payload["value"]})
        tx.invalidate(f"price:{price}")

    @query("price_of", tags=lambda price: [f"price:{price}"])
    def price_of(self, read: Reader, price: Decimal) -> Any:
        document = read.get("doc_prices", Decimal128(price))
        return None if document is None else document["value"]
