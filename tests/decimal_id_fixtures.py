"""A document projection whose ``_id`` is a Decimal128 read off the aggregate id, for
tests/test_document_decimal_keys.py: collection ``doc_prices``, tagged ``price:{_id}``."""

from __future__ import annotations

from typing import Any

from bson import Decimal128

from projections.api import Event, Projection, on


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
