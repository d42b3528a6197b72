"""The projection ``bench/pipeline.py`` measures: three tables, denormalizing.

One source (``shop``) carries ``CustomerRegistered``, ``ProductCreated`` and ``OrderPlaced``.
``OrderView`` keeps two lookup tables (customers, with per-customer order counters, and
products) and serves ``bench_order_view``: one row per order holding the customer's name and
e-mail and the product's title and price, so that reading an order needs no join. The
counters make it a read-modify-write projection whose rows are shared by every partition
(an order's partition is its own, not its customer's), so it exercises the row locks of
:class:`projections.sql_tx.SqlTx` as well as batching and prefetching.

``OrderView.partitions`` is 4 (readmodel's default) unless ``$BENCH_PIPELINE_PARTITIONS``
says otherwise. The naive pipeline of the bench applies the same logic with plain SQL (see
:func:`naive_apply`), into tables with the same columns and a ``naive_`` prefix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

from outbox.envelope import Envelope
from projections.api import Event, Projection, Tx, on

SOURCE = "shop"
PARTITIONS_VARIABLE = "BENCH_PIPELINE_PARTITIONS"  # set by bench/pipeline.py --partitions
metadata = sa.MetaData()


def _customers(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("orders", sa.Integer, nullable=False),
        sa.Column("spent", sa.BigInteger, nullable=False),
    )


def _products(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("product_id", sa.Text, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("price", sa.BigInteger, nullable=False),
    )


def _order_view(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("customer_name", sa.Text),
        sa.Column("customer_email", sa.Text),
        sa.Column("product_id", sa.Text, nullable=False),
        sa.Column("product_title", sa.Text),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price", sa.BigInteger),
        sa.Column("total", sa.BigInteger),
        sa.Column("position", sa.BigInteger, nullable=False),
    )


customers = _customers("bench_customers")
products = _products("bench_products")
order_view = _order_view("bench_order_view")
naive_customers = _customers("naive_customers")
naive_products = _products("naive_products")
naive_order_view = _order_view("naive_order_view")
NAIVE_TABLES = (naive_customers, naive_products, naive_order_view)


class CustomerRegistered(BaseModel):
    customer_id: str
    name: str
    email: str


class ProductCreated(BaseModel):
    product_id: str
    title: str
    price: int


class OrderPlaced(BaseModel):
    order_id: str
    customer_id: str
    product_id: str
    quantity: int


def _new_customer(customer_id: str) -> dict[str, Any]:
    return {"customer_id": customer_id, "name": None, "email": None, "orders": 0, "spent": 0}


class OrderView(Projection):
    """Orders denormalized with their customer and product; per-customer order counters."""

    name = "bench_order_view"
    tables = (customers, products, order_view)
    partitions = int(os.environ.get(PARTITIONS_VARIABLE, "4"))

    def prefetch(self, events: Sequence[Envelope], tx: Tx) -> None:
        wanted_customers: list[Any] = []
        wanted_products: list[Any] = []
        for event in events:
            payload = event.payload
            if event.event_type == "OrderPlaced":
                wanted_customers.append(payload["customer_id"])
                wanted_products.append(payload["product_id"])
            elif event.event_type == "CustomerRegistered":
                wanted_customers.append(payload["customer_id"])
        tx.prefetch(customers, wanted_customers)
        tx.prefetch(products, wanted_products)

    @on(SOURCE, "CustomerRegistered")
    def registered(self, event: Event[CustomerRegistered], tx: Tx) -> None:
        p = event.payload
        row = tx.get(customers, p.customer_id) or _new_customer(p.customer_id)
        tx.upsert(customers, {**row, "name": p.name, "email": p.email})

    @on(SOURCE, "ProductCreated")
    def product_created(self, event: Event[ProductCreated], tx: Tx) -> None:
        p = event.payload
        tx.upsert(products, {"product_id": p.product_id, "title": p.title, "price": p.price})

    @on(SOURCE, "OrderPlaced")
    def placed(self, event: Event[OrderPlaced], tx: Tx) -> None:
        p = event.payload
        customer = tx.get(customers, p.customer_id) or _new_customer(p.customer_id)
        product = tx.get(products, p.product_id)
        price = None if product is None else product["price"]
        total = None if price is None else price * p.quantity
        tx.upsert(
            order_view,
            {
                "order_id": p.order_id,
                "customer_id": p.customer_id,
                "customer_name": customer["name"],
                "customer_email": customer["email"],
                "product_id": p.product_id,
                "product_title": None if product is None else product["title"],
                "quantity": p.quantity,
                "unit_price": price,
                "total": total,
                "position": event.position,
            },
        )
        tx.upsert(
            customers,
            {
                **customer,
                "orders": customer["orders"] + 1,
                "spent": customer["spent"] + (total or 0),
            },
        )


def naive_apply(conn: Any, event_type: str, payload: dict[str, Any], position: int) -> None:
    """The same logic as :class:`OrderView` in plain SQL, on a psycopg connection (one
    transaction per call, committed by the caller)."""
    if event_type == "CustomerRegistered":
        conn.execute(
            "INSERT INTO naive_customers (customer_id, name, email, orders, spent) "
            "VALUES (%s, %s, %s, 0, 0) ON CONFLICT (customer_id) DO UPDATE "
            "SET name = excluded.name, email = excluded.email",
            (payload["customer_id"], payload["name"], payload["email"]),
        )
    elif event_type == "ProductCreated":
        conn.execute(
            "INSERT INTO naive_products (product_id, title, price) VALUES (%s, %s, %s) "
            "ON CONFLICT (product_id) DO UPDATE SET title = excluded.title, price = excluded.price",
            (payload["product_id"], payload["title"], payload["price"]),
        )
    elif event_type == "OrderPlaced":
        conn.execute(
            "INSERT INTO naive_customers (customer_id, orders, spent) VALUES (%s, 0, 0) "
            "ON CONFLICT DO NOTHING",
            (payload["customer_id"],),
        )
        customer = conn.execute(
            "SELECT name, email FROM naive_customers WHERE customer_id = %s FOR UPDATE",
            (payload["customer_id"],),
        ).fetchone()
        product = conn.execute(
            "SELECT title, price FROM naive_products WHERE product_id = %s",
            (payload["product_id"],),
        ).fetchone()
        price = None if product is None else product[1]
        total = None if price is None else price * payload["quantity"]
        conn.execute(
            "INSERT INTO naive_order_view (order_id, customer_id, customer_name, customer_email, "
            "product_id, product_title, quantity, unit_price, total, position) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (order_id) DO NOTHING",
            (
                payload["order_id"],
                payload["customer_id"],
                customer[0],
                customer[1],
                payload["product_id"],
                None if product is None else product[0],
                payload["quantity"],
                price,
                total,
                position,
            ),
        )
        conn.execute(
            "UPDATE naive_customers SET orders = orders + 1, spent = spent + %s "
            "WHERE customer_id = %s",
            (total or 0, payload["customer_id"]),
        )
