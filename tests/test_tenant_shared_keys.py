"""DESIGN invariant 6 where two tenants' rows would share a key (a database per tenant: each
shop numbers its orders from 1) in a table keyed without the tenant column. A tenant's
upsert of such a key moved the other tenant's row into its own tenant, keeping the columns it
did not write (the other tenant's data, then served to this tenant's reads); its ``get``
returned the other tenant's row, and its ``delete`` deleted it. Now, as in a document
projection, the other tenant's row is not found, not overwritten (the event is parked with
``TenantError``) and not deleted."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on
from projections.query_service import Queries
from projections.replay import Replayer, ReplayOptions
from tests.projection_fixtures import append_tenant_events, engine_on

metadata = sa.MetaData()
orders = sa.Table(
    "shared_key_orders",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),  # not the tenant: keys may meet
    sa.Column("tenant", sa.Text, nullable=False, index=True),
    sa.Column("customer", sa.Text),
    sa.Column("note", sa.Text),
)
peeks = sa.Table(
    "shared_key_peeks",
    metadata,
    sa.Column("tenant", sa.Text, primary_key=True),
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("seen", sa.Text),
)


class ShopOrders(Projection):
    name = "shared_key_orders"
    tables = (orders, peeks)
    tenant_column = "tenant"

    @on("bank", "Placed")
    def placed(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(orders, {"order_id": event.aggregate_id, **event.payload})

    @on("bank", "Peeked")
    def peeked(self, event: Event[dict], tx: Tx) -> None:
        row = tx.get(orders, event.aggregate_id)
        seen = None if row is None else f"{row['customer']}/{row['note']}"
        tx.upsert(peeks, {"order_id": event.aggregate_id, "seen": seen})

    @on("bank", "Cancelled")
    def cancelled(self, event: Event[dict], tx: Tx) -> None:
        tx.delete(orders, event.aggregate_id)


def _rows(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(orders).order_by(orders.c.order_id))]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_tenant_never_reads_overwrites_or_deletes_another_tenants_row_of_its_key(
    kind: str, database_for: Callable[[str], str]
) -> None:
    projection = ShopOrders()
    options = {"max_attempts": 2, "retry_backoff": 0.001}
    with engine_on(database_for(kind), [projection], **options) as (log, store, engine):
        globex = {"customer": "gina", "note": "globex-only"}
        append_tenant_events(
            log,
            [
                ("globex", "o1", "Placed", globex),
                ("acme", "o1", "Placed", {"customer": "ann"}),  # in globex's batch
                ("globex", "o3", "Placed", globex),
            ],
        )
        engine.catch_up(deadline=30)
        append_tenant_events(
            log,
            [
                ("acme", "o3", "Placed", {"customer": "ann"}),  # in a later batch
                ("globex", "o5", "Placed", globex),
                ("acme", "o5", "Peeked", {}),
                ("acme", "o5", "Cancelled", {}),
                ("acme", "o9", "Placed", {"customer": "ann", "note": "acme-only"}),
                ("acme", "o9", "Peeked", {}),
                ("acme", "o9", "Cancelled", {}),
            ],
        )
        engine.catch_up(deadline=30)

        live = _rows(log.engine)
        assert live == [
            ("o1", "globex", "gina", "globex-only"),
            ("o3", "globex", "gina", "globex-only"),
            ("o5", "globex", "gina", "globex-only"),
        ]
        parked = {p.position: p.reason for p in engine.parked("shared_key_orders")}
        assert sorted(parked) == [2, 4]
        assert (
            "shared_key_orders: a row of 'shared_key_orders' written by Placed at bank:2 has "
            "the key of another tenant's row (tenant column 'tenant'; the key is not shown): "
            "not overwritten" in parked[2]
        )
        assert "globex" not in parked[2] + parked[4]
        with log.engine.connect() as conn:
            seen = dict(conn.execute(sa.select(peeks.c.order_id, peeks.c.seen)).all())
        assert seen == {"o5": None, "o9": "ann/acme-only"}

        queries = Queries.from_engine(engine, log.engine)
        assert queries.get("shared_key_orders", "o1", tenant="acme").value is None
        assert queries.get("shared_key_orders", "o1", tenant="globex").value["note"] == (
            "globex-only"
        )

        summary = Replayer(engine.reader, projection, store).run(ReplayOptions(skip_errors=True))
        assert [s.position for s in summary.skipped] == [2, 4]
        assert _rows(log.engine) == live
