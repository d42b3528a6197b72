"""A point-of-sale service with a database per tenant: a projection subscribed to the group
``pos`` (``tests/test_source_groups.py``, ``tests/test_tenant_registry.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import sqlalchemy as sa
from pydantic import BaseModel

from config import SourceSettings
from outbox.db import create_engine
from projections.api import Event, Projection, Tx, on
from tests.outbox_helpers import init_outbox

metadata = sa.MetaData()
sales_by_day = sa.Table(
    "pos_sales_by_day",
    metadata,
    sa.Column("tenant", sa.Text, primary_key=True),
    sa.Column("day", sa.Text, primary_key=True),
    sa.Column("sales", sa.Integer, nullable=False),
    sa.Column("cents", sa.BigInteger, nullable=False),
)
registers = sa.Table(  # per register (the aggregate): were its sales applied in order?
    "pos_registers",
    metadata,
    sa.Column("tenant", sa.Text, primary_key=True),
    sa.Column("register", sa.Text, primary_key=True),
    sa.Column("last_n", sa.Integer, nullable=False),
    sa.Column("out_of_order", sa.Integer, nullable=False),
)


class SaleRecorded(BaseModel):
    day: str
    cents: int
    n: int  # the register's sale number: 1, 2, 3, ...


class SalesByDay(Projection):
    name = "sales_by_day"
    tables = (sales_by_day, registers)
    tenant_column = "tenant"
    partitions = 2

    @on("pos", "SaleRecorded")
    def recorded(self, event: Event[SaleRecorded], tx: Tx) -> None:
        sale = event.payload
        day = tx.get(sales_by_day, (event.tenant, sale.day)) or {"sales": 0, "cents": 0}
        tx.upsert(
            sales_by_day,
            {"day": sale.day, "sales": day["sales"] + 1, "cents": day["cents"] + sale.cents},
        )
        register = tx.get(registers, (event.tenant, event.aggregate_id))
        last, wrong = (register["last_n"], register["out_of_order"]) if register else (0, 0)
        tx.upsert(
            registers,
            {
                "register": event.aggregate_id,
                "last_n": sale.n,
                "out_of_order": wrong + (sale.n != last + 1),
            },
        )


def tenant_source(url: str, tenant: str) -> dict[str, object]:
    """The settings of a static member source: a database per tenant."""
    return {"url": url, "tenant": tenant, "columns": {"tenant": ""}, "poll_max": "100ms"}


def init_tenant_outbox(url: str) -> None:
    """The tenant database's outbox, as ``readmodel outbox init`` makes it."""
    init_outbox(SourceSettings(url=url, columns={"tenant": ""}), "pos")  # type: ignore[arg-type]


def record_sales(url: str, sales: Iterable[tuple[str, str, int, int]]) -> None:
    """``(register, day, cents, n)`` sales written into a tenant database's outbox."""
    engine = create_engine(url)
    try:
        rows = [
            {
                "aggregatetype": "register",
                "aggregateid": register,
                "type": "SaleRecorded",
                "payload": json.dumps({"day": day, "cents": cents, "n": n}),
            }
            for register, day, cents, n in sales
        ]
        outbox = sa.table("outbox", *[sa.column(c) for c in rows[0]])
        with engine.begin() as conn:
            conn.execute(sa.insert(outbox), rows)
    finally:
        engine.dispose()


def sales_for(registers_count: int, per_register: int, day: str = "2026-11-26") -> list:
    """Sales of ``registers_count`` registers, interleaved, numbered per register."""
    return [
        (f"r{r}", day, 100 * (r + 1), n)
        for n in range(1, per_register + 1)
        for r in range(registers_count)
    ]


def model(engine: sa.Engine) -> dict[str, tuple[int, int]]:
    """``{tenant: (sales, cents)}`` over every day."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                sales_by_day.c.tenant,
                sa.func.sum(sales_by_day.c.sales),
                sa.func.sum(sales_by_day.c.cents),
            ).group_by(sales_by_day.c.tenant)
        ).all()
    return {tenant: (int(sales), int(cents)) for tenant, sales, cents in rows}


def out_of_order(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.sum(registers.c.out_of_order))).scalar() or 0)


REGISTRY_QUERY = "SELECT tenant_id, dsn FROM tenants WHERE active ORDER BY tenant_id"


def make_registry(url: str, tenants: dict[str | None, str | None]) -> None:
    """A master database's ``tenants`` table: ``{tenant_id: dsn}``, every row active."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE tenants (tenant_id TEXT, dsn TEXT, active BOOLEAN NOT NULL)"
            )
        for tenant, dsn in tenants.items():
            registry_sql(url, "INSERT INTO tenants VALUES (:t, :d, true)", t=tenant, d=dsn)
    finally:
        engine.dispose()


def registry_sql(url: str, statement: str, **params: object) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()


def pending_rows(url: str) -> int:
    """Rows still in a tenant database's outbox."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one())
    finally:
        engine.dispose()
