"""The projection ``bench/replay.py`` rebuilds: orders with their customer's e-mail and
line items, in three tables (customers, the e-mail lookup; orders, with the customer's e-mail,
status, totals; order lines), from one source (``shop``): a realistic handler with typed
payloads that reads the customer and the order it updates.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from pydantic import BaseModel

from outbox.envelope import Envelope
from projections.api import Event, Projection, Tx, on

SOURCE = "shop"

metadata = sa.MetaData()
customers = sa.Table(
    "summary_customers",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("email", sa.Text),
    sa.Column("orders", sa.Integer, nullable=False),
)
orders = sa.Table(
    "order_summary",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("customer_email", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("items", sa.Integer, nullable=False),
    sa.Column("total_cents", sa.BigInteger, nullable=False),
    sa.Column("placed_at", sa.DateTime(timezone=True)),
    sa.Index("order_summary_customer_idx", "customer_id"),
)
lines = sa.Table(
    "order_summary_lines",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("line", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sku", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("price_cents", sa.BigInteger, nullable=False),
)


class CustomerRegistered(BaseModel):
    email: str


class Line(BaseModel):
    sku: str
    title: str
    quantity: int
    price_cents: int


class OrderPlaced(BaseModel):
    customer_id: str
    lines: list[Line]


class OrderUpdated(BaseModel):
    at: str


class OrderSummary(Projection):
    """Orders with their customer's e-mail and line items; no join at read time."""

    name = "order_summary"
    tables = (customers, orders, lines)

    def prefetch(self, events: Sequence[Envelope], tx: Tx) -> None:
        tx.prefetch(
            customers,
            [e.payload["customer_id"] for e in events if e.event_type == "OrderPlaced"]
            + [e.aggregate_id for e in events if e.event_type == "CustomerRegistered"],
        )
        tx.prefetch(orders, [e.aggregate_id for e in events if e.event_type != "OrderPlaced"])

    @on(SOURCE, "CustomerRegistered")
    def registered(self, event: Event[CustomerRegistered], tx: Tx) -> None:
        row = tx.get(customers, event.aggregate_id) or {"orders": 0}
        tx.upsert(
            customers,
            {
                "customer_id": event.aggregate_id,
                "email": event.payload.email,
                "orders": row["orders"],
            },
        )

    @on(SOURCE, "OrderPlaced")
    def placed(self, event: Event[OrderPlaced], tx: Tx) -> None:
        p = event.payload
        customer = tx.get(customers, p.customer_id)
        total = 0
        for number_, line in enumerate(p.lines, start=1):
            total += line.quantity * line.price_cents
            tx.upsert(
                lines,
                {
                    "order_id": event.aggregate_id,
                    "line": number_,
                    "sku": line.sku,
                    "title": line.title,
                    "quantity": line.quantity,
                    "price_cents": line.price_cents,
                },
            )
        tx.upsert(
            orders,
            {
                "order_id": event.aggregate_id,
                "customer_id": p.customer_id,
                "customer_email": None if customer is None else customer["email"],
                "status": "placed",
                "items": len(p.lines),
                "total_cents": total,
                "placed_at": event.occurred_at,
            },
        )
        tx.upsert(
            customers,
            {
                "customer_id": p.customer_id,
                "email": None if customer is None else customer["email"],
                "orders": (0 if customer is None else customer["orders"]) + 1,
            },
        )

    @on(SOURCE, "OrderPaid")
    def paid(self, event: Event[OrderUpdated], tx: Tx) -> None:
        self._status(event, tx, "paid")

    @on(SOURCE, "OrderShipped")
    def shipped(self, event: Event[OrderUpdated], tx: Tx) -> None:
        self._status(event, tx, "shipped")

    def _status(self, event: Event[OrderUpdated], tx: Tx, status: str) -> None:
        row = tx.get(orders, event.aggregate_id)
        if row is not None:
            tx.upsert(orders, {**row, "status": status})
