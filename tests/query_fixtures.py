"""A projection with indexes, key tags and declared queries, for tests/test_queries.py."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on
from projections.queries import Reader, query

metadata = sa.MetaData()

orders = sa.Table(
    "q_orders",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("customer", sa.Text, nullable=False, index=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("note", sa.Text),
)

customers = sa.Table(
    "q_customers",
    metadata,
    sa.Column("customer", sa.Text, primary_key=True),
    sa.Column("email", sa.Text, unique=True),
    sa.Column("name", sa.Text),
)


class ShopOrders(Projection):
    name = "shop_orders"
    tables = (orders, customers)
    partitions = 3
    key_tags = {"q_orders": "order:{order_id}", "q_customers": "customer:{customer}"}

    @on("shop", "OrderPlaced")
    def placed(self, event: Event[dict], tx: Tx) -> None:
        payload: dict[str, Any] = event.payload  # type: ignore[assignment]
        if payload["amount"] < 0:
            raise ValueError(f"negative amount in order {event.aggregate_id}")
        tx.upsert(
            orders,
            {
                "order_id": event.aggregate_id,
                "customer": payload["customer"],
                "status": "placed",
                "amount": payload["amount"],
                "note": payload.get("note"),
            },
        )

    @on("shop", "OrderShipped")
    def shipped(self, event: Event[dict], tx: Tx) -> None:
        row = tx.get(orders, event.aggregate_id)
        if row is not None:
            tx.upsert(orders, {**row, "status": "shipped"})

    @on("shop", "CustomerRegistered")
    def registered(self, event: Event[dict], tx: Tx) -> None:
        payload: dict[str, Any] = event.payload  # type: ignore[assignment]
        tx.upsert(
            customers,
            {"customer": event.aggregate_id, "email": payload["email"], "name": payload["name"]},
        )

    @query("by_email", cache_tags=lambda row: [f"customer:{row['customer']}"])
    def by_email(self, read: Reader, email: str) -> dict[str, Any] | None:
        """The customer with this email."""
        return read.first(customers, email=email)

    @query("order_status", tags=lambda order_id: [f"order:{order_id}"])
    def order_status(self, read: Reader, order_id: str) -> str | None:
        row = read.get(orders, order_id)
        return None if row is None else row["status"]

    @query()
    def big_orders(self, read: Reader, customer: str, min_amount: int = 0) -> list[dict[str, Any]]:
        statement = (
            sa.select(orders.c.order_id, orders.c.amount)
            .where(orders.c.customer == customer, orders.c.amount >= min_amount)
            .order_by(orders.c.order_id)
        )
        return read.rows(statement)
