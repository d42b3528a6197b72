"""``customer_stats``: per customer, orders count and total spent, exact.

What counts: ``orders_count`` is the customer's orders not cancelled, ``cancelled_count``
the cancelled ones, ``total_spent_cents`` the totals of paid orders not cancelled (a
cancelled paid order is refunded). An auxiliary table remembers each order's customer,
total and state, because ``OrderPaid`` and ``OrderCancelled`` must know whether the
order was already paid or cancelled to stay exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from outbox.envelope import Envelope
from projections.api import Event, Projection, Tx, on
from projections.queries import Reader, query
from projections.reference.events import ORDERS, OrderCancelled, OrderPaid, OrderPlaced

metadata = sa.MetaData()

customer_stats = sa.Table(
    "customer_stats",
    metadata,
    sa.Column("customer_id", sa.String(36), primary_key=True),
    sa.Column("orders_count", sa.Integer, nullable=False),
    sa.Column("cancelled_count", sa.Integer, nullable=False),
    sa.Column("total_spent_cents", sa.BigInteger, nullable=False),
)

stats_orders = sa.Table(  # auxiliary: what each order contributed
    "customer_stats_orders",
    metadata,
    sa.Column("order_id", sa.String(36), primary_key=True),
    sa.Column("customer_id", sa.String(36), nullable=False),
    sa.Column("total_cents", sa.BigInteger, nullable=False),
    sa.Column("paid", sa.Boolean, nullable=False),
    sa.Column("cancelled", sa.Boolean, nullable=False),
)


class CustomerStats(Projection):
    """Cached by customer id (tag ``customer:<id>``)."""

    name = "customer_stats"
    tables = (customer_stats, stats_orders)
    key_tags = {"customer_stats": "customer:{customer_id}"}

    def cache_tags(self, event: Envelope) -> Iterable[str]:
        customer = event.payload.get("user_id")
        return [f"customer:{customer}"] if customer else []

    def prefetch(self, events: Sequence[Envelope], tx: Tx) -> None:
        tx.prefetch(stats_orders, [e.aggregate_id for e in events])
        tx.prefetch(customer_stats, sorted({str(e.payload.get("user_id")) for e in events}))

    @on(ORDERS, "OrderPlaced")
    def placed(self, event: Event[OrderPlaced], tx: Tx) -> None:
        p = event.payload
        tx.upsert(
            stats_orders,
            {
                "order_id": p.order_id,
                "customer_id": p.user_id,
                "total_cents": p.total_cents,
                "paid": False,
                "cancelled": False,
            },
        )
        self._change(tx, p.user_id, orders_count=1)

    @on(ORDERS, "OrderPaid")
    def paid(self, event: Event[OrderPaid], tx: Tx) -> None:
        order = self._order(tx, event.payload.order_id)
        if order["paid"] or order["cancelled"]:
            return
        tx.upsert(stats_orders, {**order, "paid": True})
        self._change(tx, order["customer_id"], total_spent_cents=order["total_cents"])

    @on(ORDERS, "OrderCancelled")
    def cancelled(self, event: Event[OrderCancelled], tx: Tx) -> None:
        order = self._order(tx, event.payload.order_id)
        if order["cancelled"]:
            return
        tx.upsert(stats_orders, {**order, "cancelled": True})
        refund = -order["total_cents"] if order["paid"] else 0
        self._change(
            tx, order["customer_id"], orders_count=-1, cancelled_count=1, total_spent_cents=refund
        )

    @staticmethod
    def _order(tx: Tx, order_id: str) -> dict[str, Any]:
        order = tx.get(stats_orders, order_id)
        if order is None:  # events of one order arrive in order: only a log cut mid-history
            raise LookupError(f"order {order_id} was never placed")
        return order

    @staticmethod
    def _change(tx: Tx, customer_id: str, **deltas: int) -> None:
        row = tx.get(customer_stats, customer_id) or {
            "customer_id": customer_id,
            "orders_count": 0,
            "cancelled_count": 0,
            "total_spent_cents": 0,
        }
        tx.upsert(customer_stats, {**row, **{k: row[k] + v for k, v in deltas.items()}})

    @query("by_customer", tags=lambda customer_id: [f"customer:{customer_id}"])
    def by_customer(self, read: Reader, customer_id: str) -> dict[str, Any] | None:
        """One customer's figures."""
        return read.get(customer_stats, customer_id)
