"""The README's quickstart projection: orders per customer, from a SQLite "shop" service.

Run ``python -m projections.examples.quickstart [N]`` to have the shop write N orders
(state and outbox rows in one transaction each), then
``readmodel run --until-caught-up --config config/examples/quickstart.toml``.
"""

from __future__ import annotations

import json
import random
import sys
import uuid

import sqlalchemy as sa
from pydantic import BaseModel

from projections import Event, Projection, Tx, on

metadata = sa.MetaData()

customer_orders = sa.Table(
    "customer_orders",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("orders", sa.Integer, nullable=False),
    sa.Column("spent_cents", sa.BigInteger, nullable=False),
)


class OrderPlaced(BaseModel):
    customer_id: str
    total_cents: int


class CustomerOrders(Projection):
    name = "customer_orders"
    tables = (customer_orders,)

    @on("shop", "OrderPlaced")
    def placed(self, event: Event[OrderPlaced], tx: Tx) -> None:
        customer = event.payload.customer_id
        row = tx.get(customer_orders, customer) or {"orders": 0, "spent_cents": 0}
        tx.upsert(
            customer_orders,
            {
                "customer_id": customer,
                "orders": row["orders"] + 1,
                "spent_cents": row["spent_cents"] + event.payload.total_cents,
            },
        )


def write_orders(url: str, count: int, seed: int = 7) -> None:
    """The shop service: each order is one transaction writing the order and its outbox row."""
    rng = random.Random(seed)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer_id TEXT, total INT)"
        )
    for _ in range(count):
        order_id, customer = str(uuid.uuid4()), f"customer-{rng.randrange(10)}"
        total = rng.randrange(100, 10_000)
        with engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO orders VALUES (:id, :customer, :total)"),
                {"id": order_id, "customer": customer, "total": total},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                    "VALUES ('order', :id, 'OrderPlaced', :payload)"
                ),
                {
                    "id": order_id,
                    "payload": json.dumps({"customer_id": customer, "total_cents": total}),
                },
            )
    engine.dispose()


if __name__ == "__main__":
    write_orders("sqlite:///shop.db", int(sys.argv[1]) if len(sys.argv) > 1 else 100)
