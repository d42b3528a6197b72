"""``product_catalog``: each product with its live stock and average rating."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from outbox.envelope import Envelope
from projections.api import Event, Projection, Tx, on
from projections.queries import Reader, query
from projections.reference.events import (
    PRODUCTS,
    PriceChanged,
    ProductCreated,
    ProductUpdated,
    ReviewPosted,
    StockAdjusted,
)

metadata = sa.MetaData()

product_catalog = sa.Table(
    "product_catalog",
    metadata,
    sa.Column("product_id", sa.String(36), primary_key=True),
    sa.Column("slug", sa.String(255), nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("sku", sa.String(100), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("price_cents", sa.Integer, nullable=False),
    sa.Column("stock", sa.Integer, nullable=False),
    sa.Column("review_count", sa.Integer, nullable=False),
    sa.Column("rating_sum", sa.Integer, nullable=False),
    sa.Column("average_rating", sa.Float),
)


def average_rating(rating_sum: int, review_count: int) -> float | None:
    """The average shown to shoppers (``verify`` computes it the same way)."""
    return round(rating_sum / review_count, 2) if review_count else None


class ProductCatalog(Projection):
    """Cached by id and by slug, both tagged ``product:<id>``."""

    name = "product_catalog"
    tables = (product_catalog,)
    key_tags = {"product_catalog": "product:{product_id}"}

    def prefetch(self, events: Sequence[Envelope], tx: Tx) -> None:
        tx.prefetch(product_catalog, [e.aggregate_id for e in events])

    @on(PRODUCTS, "ProductCreated")
    def created(self, event: Event[ProductCreated], tx: Tx) -> None:
        p = event.payload
        row = tx.get(product_catalog, p.product_id) or {}
        tx.upsert(
            product_catalog,
            {
                "product_id": p.product_id,
                "slug": p.slug,
                "name": p.name,
                "sku": p.sku,
                "description": p.description,
                "price_cents": p.price_cents,
                "stock": row.get("stock", 0),
                "review_count": row.get("review_count", 0),
                "rating_sum": row.get("rating_sum", 0),
                "average_rating": row.get("average_rating"),
            },
        )

    @on(PRODUCTS, "ProductUpdated")
    def updated(self, event: Event[ProductUpdated], tx: Tx) -> None:
        p = event.payload
        row = self._row(tx, p.product_id)
        tx.upsert(
            product_catalog, {**row, "name": p.name, "slug": p.slug, "description": p.description}
        )

    @on(PRODUCTS, "PriceChanged")
    def repriced(self, event: Event[PriceChanged], tx: Tx) -> None:
        row = self._row(tx, event.payload.product_id)
        tx.upsert(product_catalog, {**row, "price_cents": event.payload.price_cents})

    @on(PRODUCTS, "StockAdjusted")
    def stock(self, event: Event[StockAdjusted], tx: Tx) -> None:
        row = self._row(tx, event.payload.product_id)
        tx.upsert(product_catalog, {**row, "stock": event.payload.stock})

    @on(PRODUCTS, "ReviewPosted")
    def reviewed(self, event: Event[ReviewPosted], tx: Tx) -> None:
        row = self._row(tx, event.payload.product_id)
        count, total = row["review_count"] + 1, row["rating_sum"] + event.payload.rating
        tx.upsert(
            product_catalog,
            {
                **row,
                "review_count": count,
                "rating_sum": total,
                "average_rating": average_rating(total, count),
            },
        )

    @staticmethod
    def _row(tx: Tx, product_id: str) -> dict[str, Any]:
        """The product's row; one not created yet (a log that starts mid-history) is kept
        with what later events tell."""
        return tx.get(product_catalog, product_id) or {
            "product_id": product_id,
            "slug": product_id,
            "name": "",
            "sku": "",
            "description": "",
            "price_cents": 0,
            "stock": 0,
            "review_count": 0,
            "rating_sum": 0,
            "average_rating": None,
        }

    @query("by_id", tags=lambda product_id: [f"product:{product_id}"])
    def by_id(self, read: Reader, product_id: str) -> dict[str, Any] | None:
        """One product by id."""
        return read.get(product_catalog, product_id)

    @query("by_slug", cache_tags=lambda row: [f"product:{row['product_id']}"] if row else [])
    def by_slug(self, read: Reader, slug: str) -> dict[str, Any] | None:
        """One product by its URL slug."""
        return read.first(product_catalog, slug=slug)
