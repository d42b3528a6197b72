"""DESIGN invariant 6 in a handler: ``tx.find`` on a tenant table sees the event's tenant's
rows only (as a document projection's does). It saw every tenant's: a per-tenant count built
from it counted another tenant's rows, which that tenant's reads then showed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on
from projections.query_service import Queries
from projections.replay import Replayer, ReplayOptions
from tests.projection_fixtures import append_tenant_events, engine_on

metadata = sa.MetaData()
accounts = sa.Table(
    "find_accounts",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("tenant", sa.Text, nullable=False, index=True),
    sa.Column("owner", sa.Text, nullable=False, index=True),
)
owners = sa.Table(  # per tenant and owner: how many accounts the owner has
    "find_owners",
    metadata,
    sa.Column("tenant", sa.Text, primary_key=True),
    sa.Column("owner", sa.Text, primary_key=True),
    sa.Column("accounts", sa.Integer, nullable=False),
    sa.Column("named_elsewhere", sa.Integer, nullable=False),
)


class OwnerCounts(Projection):
    name = "find_owner_counts"
    tables = (accounts, owners)
    tenant_column = "tenant"

    @on("bank", "Opened")
    def opened(self, event: Event[dict], tx: Tx) -> None:
        owner = event.payload["owner"]
        tx.upsert(accounts, {"account": event.aggregate_id, "owner": owner})
        elsewhere = tx.find(accounts, owner=owner, tenant=event.payload["other"])
        row = {"owner": owner, "accounts": len(tx.find(accounts, owner=owner))}
        tx.upsert(owners, {**row, "named_elsewhere": len(elsewhere)})

    @on("bank", "Audited")
    def audited(self, event: Event[dict], tx: Tx) -> None:
        tx.find(accounts, owner=event.payload["owner"])


def _counts(engine: sa.Engine) -> list[tuple[str, str, int, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(owners).order_by(owners.c.tenant))]  # type: ignore[misc]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_handlers_find_sees_its_events_tenants_rows_only(
    kind: str, database_for: Callable[[str], str]
) -> None:
    projection = OwnerCounts()
    options = {"max_attempts": 2, "retry_backoff": 0.001}
    with engine_on(database_for(kind), [projection], **options) as (log, store, engine):
        opened = {"owner": "ann", "other": "globex"}
        append_tenant_events(log, [("globex", "g1", "Opened", {"owner": "ann", "other": "acme"})])
        engine.catch_up(deadline=30)
        append_tenant_events(
            log,
            [("acme", "a1", "Opened", opened), (None, "x1", "Audited", {"owner": "ann"})],
        )
        engine.catch_up(deadline=30)

        live = _counts(log.engine)
        assert live == [("acme", "ann", 1, 0), ("globex", "ann", 1, 0)]
        queries = Queries.from_engine(engine, log.engine)
        found = queries.get("find_owner_counts", "acme,ann", table="find_owners", tenant="acme")
        assert found.value["accounts"] == 1  # not globex's account too

        (parked,) = engine.parked("find_owner_counts")  # no tenant: no tenant's rows to find
        assert parked.aggregate_id == "x1"
        assert (
            "find_owner_counts: Audited at bank:3, which has no tenant, cannot find rows of "
            "'find_accounts': they belong to tenants (tenant column 'tenant')" in parked.reason
        )

        summary = Replayer(engine.reader, projection, store).run(ReplayOptions(skip_errors=True))
        assert [s.position for s in summary.skipped] == [3]
        assert _counts(log.engine) == live
