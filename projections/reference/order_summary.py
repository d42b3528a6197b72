"""``order_summary``: each order with its customer's e-mail and its line items' titles and
prices, so nobody joins the orders and auth services at read time.

Events of the two sources have no order between them: an order may arrive before its
customer's registration, and an e-mail change after orders that must then show it. The
projection keeps each customer's current e-mail in an auxiliary table and writes it into
every order of that customer, whichever side arrives first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from outbox.envelope import Envelope
from projections.api import Event, Projection, Tx, on
from projections.queries import Reader, query
from projections.reference.events import (
    AUTH,
    ORDERS,
    OrderCancelled,
    OrderPaid,
    OrderPlaced,
    OrderShipped,
    UserEmailChanged,
    UserRegistered,
)

metadata = sa.MetaData()

order_summary = sa.Table(
    "order_summary",
    metadata,
    sa.Column("order_id", sa.String(36), primary_key=True),
    sa.Column("order_number", sa.String(100), nullable=False),
    sa.Column("customer_id", sa.String(36), nullable=False, index=True),
    sa.Column("customer_email", sa.String(255)),  # NULL until the customer is known
    sa.Column("status", sa.String(50), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("total_cents", sa.BigInteger, nullable=False),
    sa.Column("item_count", sa.Integer, nullable=False),
    sa.Column(
        "lines", sa.JSON, nullable=False
    ),  # [{product_id, title, unit_price_cents, quantity}]
    sa.Column("tracking_number", sa.String(255)),
)

customers = sa.Table(  # auxiliary: each customer's current e-mail, from the auth service
    "order_summary_customers",
    metadata,
    sa.Column("customer_id", sa.String(36), primary_key=True),
    sa.Column("email", sa.String(255), nullable=False),
)


class OrderSummary(Projection):
    """Cached by order id (tag ``order:<id>``) and by customer (tag ``customer:<id>``)."""

    name = "order_summary"
    tables = (order_summary, customers)
    key_tags = {"order_summary": "order:{order_id}"}

    def cache_tags(self, event: Envelope) -> Iterable[str]:
        customer = event.payload.get("user_id")
        tags = [f"customer:{customer}"] if customer else []
        if event.source == ORDERS:
            tags.append(f"order:{event.aggregate_id}")
        return tags

    def prefetch(self, events: Sequence[Envelope], tx: Tx) -> None:
        """Customers first, then orders: the order every lane locks rows in on PostgreSQL
        (an e-mail change locks its customer, then that customer's orders), so lanes of the
        two sources wait for each other instead of deadlocking."""
        people = [str(e.payload["user_id"]) for e in events if "user_id" in e.payload]
        if people:
            tx.prefetch(customers, people)
        orders = [e.aggregate_id for e in events if e.source == ORDERS]
        if orders:
            tx.prefetch(order_summary, orders)

    # -- orders ---------------------------------------------------------------------

    @on(ORDERS, "OrderPlaced")
    def placed(self, event: Event[OrderPlaced], tx: Tx) -> None:
        p = event.payload
        customer = tx.get(customers, p.user_id)
        tx.upsert(
            order_summary,
            {
                "order_id": p.order_id,
                "order_number": p.order_number,
                "customer_id": p.user_id,
                "customer_email": customer["email"] if customer else None,
                "status": "placed",
                "currency": p.currency,
                "total_cents": p.total_cents,
                "item_count": sum(line.quantity for line in p.lines),
                "lines": [
                    {
                        "product_id": line.product_id,
                        "title": line.title,
                        "unit_price_cents": line.unit_price_cents,
                        "quantity": line.quantity,
                    }
                    for line in p.lines
                ],
                "tracking_number": None,
            },
        )

    @on(ORDERS, "OrderPaid")
    def paid(self, event: Event[OrderPaid], tx: Tx) -> None:
        self._status(tx, event.payload.order_id, status="paid")

    @on(ORDERS, "OrderShipped")
    def shipped(self, event: Event[OrderShipped], tx: Tx) -> None:
        p = event.payload
        self._status(tx, p.order_id, status="shipped", tracking_number=p.tracking_number)

    @on(ORDERS, "OrderCancelled")
    def cancelled(self, event: Event[OrderCancelled], tx: Tx) -> None:
        self._status(tx, event.payload.order_id, status="cancelled")

    @staticmethod
    def _status(tx: Tx, order_id: str, **changes: Any) -> None:
        row = tx.get(order_summary, order_id)
        if row is None:  # events of one order arrive in order: only a log cut mid-history
            raise LookupError(f"order {order_id} was never placed")
        tx.upsert(order_summary, {**row, **changes})

    # -- auth -----------------------------------------------------------------------

    @on(AUTH, "UserRegistered")
    def registered(self, event: Event[UserRegistered], tx: Tx) -> None:
        self._email(tx, event.payload.user_id, event.payload.email)

    @on(AUTH, "UserEmailChanged")
    def email_changed(self, event: Event[UserEmailChanged], tx: Tx) -> None:
        self._email(tx, event.payload.user_id, event.payload.email)

    @staticmethod
    def _email(tx: Tx, customer_id: str, email: str) -> None:
        """Remember the e-mail and write it into the customer's orders placed so far.

        ``tx.get`` of the customer row first: on PostgreSQL it locks the customer, which an
        ``OrderPlaced`` of the same customer locks too, so an order committed after this
        reads the new e-mail and one committed before is found here."""
        tx.get(customers, customer_id)
        tx.upsert(customers, {"customer_id": customer_id, "email": email})
        for found in tx.find(order_summary, customer_id=customer_id):
            row = tx.get(order_summary, found["order_id"])  # locked, current
            if row is not None and row["customer_email"] != email:
                tx.upsert(order_summary, {**row, "customer_email": email})
                tx.invalidate(f"order:{row['order_id']}")

    # -- queries --------------------------------------------------------------------

    @query("by_id", tags=lambda order_id: [f"order:{order_id}"])
    def by_id(self, read: Reader, order_id: str) -> dict[str, Any] | None:
        """One order by id."""
        return read.get(order_summary, order_id)

    @query("by_customer", tags=lambda customer_id, limit=50: [f"customer:{customer_id}"])
    def by_customer(self, read: Reader, customer_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """A customer's orders (at most ``limit``), by order number."""
        return read.find(
            order_summary, customer_id=customer_id, order_by="order_number", limit=limit
        )
