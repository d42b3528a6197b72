"""Orders of a shared outbox with a tenant column, where every tenant numbers its orders
from 1 (``tests/test_tenant_holds.py``; importable by the CLI through config).

An order's ``Stepped`` events carry its step number; the read models record the steps in
the order they were applied (``"1,2,3"``), once each (applying an event again changes
nothing: both projections are replay-safe). A step marked ``poison`` fails while its
tenant is listed in ``READMODEL_TEST_FAIL_TENANTS`` (the handler is "fixed" by taking it
out)."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on

FAIL_TENANTS = "READMODEL_TEST_FAIL_TENANTS"
SOURCE = "shop"

metadata = sa.MetaData()
tenant_orders = sa.Table(
    "tenant_orders",
    metadata,
    sa.Column("tenant", sa.Text, primary_key=True),
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("steps", sa.Text, nullable=False),
)


def _refuse_poison(event: Event[dict]) -> None:
    failing = os.environ.get(FAIL_TENANTS, "").split(",")
    if event.payload.get("poison") and event.tenant in failing:
        raise RuntimeError(f"refusing {event.tenant}'s {event.aggregate_id}")


def _with_step(steps: list[str], event: Event[dict]) -> list[str]:
    step = str(event.payload["step"])
    return steps if step in steps else [*steps, step]


class TenantOrders(Projection):
    name = "tenant_orders"
    tables = (tenant_orders,)
    tenant_column = "tenant"
    replay_safe = True

    @on(SOURCE, "Stepped")
    def stepped(self, event: Event[dict], tx: Tx) -> None:
        _refuse_poison(event)
        row = tx.get(tenant_orders, (event.tenant, event.aggregate_id))
        steps = _with_step(row["steps"].split(",") if row else [], event)
        tx.upsert(tenant_orders, {"order_id": event.aggregate_id, "steps": ",".join(steps)})


class DocTenantOrders(Projection):
    """:class:`TenantOrders` as MongoDB documents (store ``docs``), ``_id`` ``tenant:order``."""

    name = "doc_tenant_orders"
    store = "docs"
    collections = ("doc_tenant_orders",)
    tenant_column = "tenant"
    replay_safe = True

    @on(SOURCE, "Stepped")
    def stepped(self, event: Event[dict], tx: Any) -> None:
        _refuse_poison(event)
        key = f"{event.tenant}:{event.aggregate_id}"
        document = tx.get("doc_tenant_orders", key) or {"_id": key, "steps": []}
        document["steps"] = _with_step(document["steps"], event)
        tx.upsert("doc_tenant_orders", document)


def step(tenant: str | None, order: str, n: int, poison: bool = False) -> tuple[Any, ...]:
    """A ``Stepped`` event for :func:`tests.projection_fixtures.append_tenant_events`."""
    payload: dict[str, Any] = {"step": n, "poison": True} if poison else {"step": n}
    return (tenant, order, "Stepped", payload)


FAIL_STEPS = "READMODEL_TEST_FAIL_STEPS"
"""Comma-separated ``tenant:step`` tags (``-`` for no tenant) that :class:`ArrivalOrders`
and :class:`DocArrivalOrders` refuse."""

arrival_orders = sa.Table(
    "arrival_orders",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("steps", sa.Text, nullable=False),
)


def arrival_tag(event: Event[dict]) -> str:
    """``tenant:step`` (``-:step`` without a tenant): what the arrival models record."""
    return f"{event.tenant or '-'}:{event.payload['step']}"


def _arrived(steps: list[str], event: Event[dict]) -> list[str]:
    if arrival_tag(event) in os.environ.get(FAIL_STEPS, "").split(","):
        raise RuntimeError(f"refusing {arrival_tag(event)}")
    return steps if arrival_tag(event) in steps else [*steps, arrival_tag(event)]


class ArrivalOrders(Projection):
    """Every tenant's events of an order id in one row, in the order they were applied: it
    shows an event running past another tenant's (or no tenant's) parked one."""

    name = "arrival_orders"
    tables = (arrival_orders,)
    replay_safe = True

    @on(SOURCE, "Stepped")
    def stepped(self, event: Event[dict], tx: Tx) -> None:
        row = tx.get(arrival_orders, event.aggregate_id)
        steps = _arrived(row["steps"].split(",") if row else [], event)
        tx.upsert(arrival_orders, {"order_id": event.aggregate_id, "steps": ",".join(steps)})


class DocArrivalOrders(Projection):
    """:class:`ArrivalOrders` as MongoDB documents (store ``docs``), ``_id`` the order id."""

    name = "doc_arrival_orders"
    store = "docs"
    collections = ("doc_arrival_orders",)
    replay_safe = True

    @on(SOURCE, "Stepped")
    def stepped(self, event: Event[dict], tx: Any) -> None:
        document = tx.get("doc_arrival_orders", event.aggregate_id) or {
            "_id": event.aggregate_id,
            "steps": [],
        }
        document["steps"] = _arrived(document["steps"], event)
        tx.upsert("doc_arrival_orders", document)
