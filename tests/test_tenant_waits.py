"""A tenant projection's consistency wait says whether the awaited event was applied, not
what it was (README, Tenants): ``Queries.wait`` told a timeout with the event's type and
aggregate id, and a wait that reached the event (``wait`` or ``wait_for``) returned its
source and lane, which name its tenant's member source (``pos:globex``), for an event id
anyone may hold."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from outbox.schema import event_log
from projections.api import Event, Projection, Tx, on
from projections.consistency import ConsistencyTimeout
from projections.query_service import Queries
from tests.projection_fixtures import append_tenant_events, engine_on

metadata = sa.MetaData()
vaults = sa.Table(
    "wait_vaults",
    metadata,
    sa.Column("vault", sa.Text, primary_key=True),
    sa.Column("tenant", sa.Text, nullable=False, index=True),
)


class Vaults(Projection):
    name = "wait_vaults"
    tables = (vaults,)
    tenant_column = "tenant"

    @on("pos", "Opened")
    def opened(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(vaults, {"vault": event.aggregate_id})


def test_a_tenant_projections_wait_tells_nothing_of_the_event(
    database_for: Callable[[str], str],
) -> None:
    with engine_on(database_for("postgresql"), [Vaults()]) as (log, store, engine):
        append_tenant_events(log, [("globex", "globex-vip-7", "Opened", {})], "pos:globex")
        queries = Queries.from_engine(engine, log.engine)
        with pytest.raises(ConsistencyTimeout) as waited:  # logged, not applied yet
            queries.wait("wait_vaults", "pos:globex:1", timeout=0.2)
        assert "globex-vip-7" not in str(waited.value) and "Opened" not in str(waited.value)
        assert "has not applied the event awaited by" in str(waited.value)

        engine.catch_up(deadline=30)
        with log.engine.connect() as conn:
            event_id = conn.execute(sa.select(event_log.c.event_id)).scalar_one()
        reached = queries.wait("wait_vaults", event_id, timeout=5)
        assert "globex" not in repr(reached) and reached.lane is None
        read = queries.get("wait_vaults", "v1", tenant="acme", wait_for=event_id, timeout=5)
        assert read.value is None and "globex" not in repr(read.consistency)
