"""A point of sale with a database per tenant (README, "A database per tenant").

``python -m projections.examples.tenants acme globex`` opens each shop's own database (the
SQLite file ``pos_<tenant>.db``, with its outbox), lists it in the tenant registry
``pos_registry.db`` (its DSN encrypted when ``READMODEL_SECRET_KEY`` is set) and records
100 sales in it, each sale and its outbox row in one transaction. ``SalesByDay`` counts
them per tenant and day, from every shop of the group ``pos``.
"""

from __future__ import annotations

import json
import os
import random
import sys

import sqlalchemy as sa
from pydantic import BaseModel

from projections import Event, Projection, Tx, on

metadata = sa.MetaData()
sales_by_day = sa.Table(
    "sales_by_day",
    metadata,
    sa.Column("day", sa.Text, primary_key=True),
    sa.Column("tenant", sa.Text, primary_key=True),
    sa.Column("sales", sa.Integer, nullable=False),
    sa.Column("cents", sa.BigInteger, nullable=False),
)


class SaleRecorded(BaseModel):
    day: str
    cents: int


class SalesByDay(Projection):
    name = "sales_by_day"
    tables = (sales_by_day,)
    tenant_column = "tenant"  # each row is its event's tenant's; reads give the tenant

    @on("pos", "SaleRecorded")  # every shop listed in [tenants.pos]
    def recorded(self, event: Event[SaleRecorded], tx: Tx) -> None:
        sale = event.payload
        day = tx.get(sales_by_day, (sale.day, event.tenant)) or {"sales": 0, "cents": 0}
        tx.upsert(
            sales_by_day,
            {"day": sale.day, "sales": day["sales"] + 1, "cents": day["cents"] + sale.cents},
        )


REGISTRY = "sqlite:///pos_registry.db"


def open_shop(tenant: str, sales: int = 100, seed: int = 7) -> None:
    """The shop's database and outbox, its registry row, then its sales."""
    from config import SourceSettings
    from config.secrets import SECRET_KEY_ENV, encrypt
    from outbox.sources import open_source

    dsn = f"sqlite:///pos_{tenant}.db"
    outbox = open_source(f"pos:{tenant}", SourceSettings(url=dsn, columns={"tenant": ""}))  # type: ignore[arg-type]
    try:
        outbox.install()
    finally:
        outbox.close()
    registry = sa.create_engine(REGISTRY)
    with registry.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS tenants "
            "(tenant_id TEXT PRIMARY KEY, dsn TEXT NOT NULL, active BOOLEAN NOT NULL)"
        )
        listed = encrypt(dsn) if os.environ.get(SECRET_KEY_ENV) else dsn
        conn.execute(
            sa.text("INSERT OR REPLACE INTO tenants VALUES (:tenant, :dsn, 1)"),
            {"tenant": tenant, "dsn": listed},
        )
    registry.dispose()
    rng = random.Random(f"{seed}:{tenant}")
    shop = sa.create_engine(dsn)
    with shop.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS sales (id INTEGER PRIMARY KEY, day TEXT, cents INT)"
        )
    for _ in range(sales):
        day, cents = f"2026-11-{rng.randint(24, 26)}", rng.randrange(100, 5_000)
        with shop.begin() as conn:
            sale_id = conn.execute(
                sa.text("INSERT INTO sales (day, cents) VALUES (:day, :cents)"),
                {"day": day, "cents": cents},
            ).lastrowid
            conn.execute(
                sa.text(
                    "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                    "VALUES ('sale', :id, 'SaleRecorded', :payload)"
                ),
                {"id": str(sale_id), "payload": json.dumps({"day": day, "cents": cents})},
            )
    shop.dispose()


if __name__ == "__main__":
    for name in sys.argv[1:] or ["acme", "globex"]:
        open_shop(name)
