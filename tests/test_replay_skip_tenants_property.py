"""Property: with ``--skip-errors``, a rebuild of a tenant projection in transactions of
any size leaves the rows and the skipped list (in order, with each one's hold tenant) that
it leaves in transactions of one event, where no skip shares a transaction: failures of
events with and without a tenant sharing order ids (merged holds), several a transaction
(PostgreSQL and SQLite)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbox.log import EventLog
from projections.api import Event, Projection, Tx, on
from projections.log_reader import LogReader
from projections.replay import Replayer
from projections.replay_types import ReplayOptions
from projections.sql_store import SqlStore
from tests.projection_fixtures import append_tenant_events

SOURCE = "mix"
metadata = sa.MetaData()
mix_steps = sa.Table(
    "mix_steps",
    metadata,
    sa.Column("tenant", sa.Text, primary_key=True),
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("steps", sa.Text, nullable=False),
)
mix_all = sa.Table(
    "mix_all",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("steps", sa.Text, nullable=False),
)


class _MixOrders(Projection):
    name = "mix_orders"
    tables = (mix_steps, mix_all)
    shared_tables = (mix_all,)
    tenant_column = "tenant"

    @on(SOURCE, "Stepped")
    def stepped(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        tag = f"{event.tenant or '-'}:{event.payload['step']}"
        shared = tx.get(mix_all, event.aggregate_id)
        steps = f"{shared['steps']},{tag}" if shared else tag
        tx.upsert(mix_all, {"order_id": event.aggregate_id, "steps": steps})
        if event.tenant is not None or event.payload.get("tenant_write"):
            row = tx.get(mix_steps, (event.tenant or "", event.aggregate_id))
            steps = f"{row['steps']},{tag}" if row else tag
            tx.upsert(mix_steps, {"order_id": event.aggregate_id, "steps": steps})
        tx.invalidate(f"order:{event.aggregate_id}")
        if event.payload.get("fail"):
            raise ValueError(f"refusing {tag}")


_Events = list[tuple[str | None, str, str, dict[str, Any]]]


@st.composite
def _events(draw: st.DrawFn) -> _Events:
    events: _Events = []
    for n in range(draw(st.integers(1, 40))):
        payload: dict[str, Any] = {"step": n}
        if draw(st.integers(0, 5)) == 0:
            payload["fail"] = True
        if draw(st.integers(0, 8)) == 0:
            payload["tenant_write"] = True
        tenant = draw(st.sampled_from(["acme", "globex", None]))
        events.append((tenant, draw(st.sampled_from(["o1", "o2", "o3"])), "Stepped", payload))
    return events


def _rebuild(url: str, events: _Events, batch: int) -> tuple[Any, ...]:
    log = EventLog(url)
    try:
        log.create_tables()
        store = SqlStore(url, engine=log.engine)
        store.create_tables([_MixOrders()])
        append_tenant_events(log, events, source=SOURCE, aggregate_type="order")
        replayer = Replayer(LogReader(log), _MixOrders(), store, batch_size=batch)
        summary = replayer.run(ReplayOptions(skip_errors=True))
        with log.engine.connect() as conn:
            found = [
                sorted(tuple(row) for row in conn.execute(sa.select(table)))
                for table in (mix_steps, mix_all)
            ]
        skipped = [
            (s.position, s.error, s.held_behind, s.tenant, s.event_tenant) for s in summary.skipped
        ]
        return found, skipped, summary.events
    finally:
        log.close()


@pytest.mark.parametrize("engine", ["postgresql", "sqlite"])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=_events(), batch=st.integers(2, 30))
def test_a_tenant_rebuild_skips_as_it_does_one_event_a_transaction(
    database_for: Callable[[str], str], engine: str, events: _Events, batch: int
) -> None:
    one_by_one = _rebuild(database_for(engine), events, 1)
    assert _rebuild(database_for(engine), events, batch) == one_by_one
