"""Each parked event's traceback is its own. A live batch where a handler fails after an
earlier event whose write the database refuses: the engine applies the events before the
failing one, meets the refusal, and parks that earlier event. Its traceback began with the
later event's handler failure ("which was followed by" the refusal), so an operator
reading it took the refused event for a victim of that handler's bug."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on
from tests.projection_fixtures import engine_on, log_events

owners = sa.Table(
    "traced_owners",
    sa.MetaData(),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),
)


class Owners(Projection):
    name = "traced_owners"
    tables = (owners,)
    partitions = 1  # one lane: one batch holds both events

    @on("shop", "Placed")
    def placed(self, event: Event[dict], tx: Tx) -> None:
        if event.payload.get("boom"):
            raise RuntimeError(f"a bug met at {event.aggregate_id}")
        tx.upsert(owners, {"id": event.aggregate_id, "owner": event.payload["owner"]})


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_refused_event_found_before_a_failing_one_is_parked_with_its_own_traceback(
    backend: str, database_for: Callable[[str], str]
) -> None:
    events = [
        ("x", "Placed", {"owner": None}),  # refused: NULL, found at the batch's end
        ("y", "Placed", {"owner": "v"}),
        ("z", "Placed", {"owner": "u", "boom": True}),  # its handler fails first
    ]
    with engine_on(database_for(backend), [Owners()], batch_size=100, max_attempts=1) as (
        log,
        store,
        engine,
    ):
        log_events(log, events)
        engine.catch_up(deadline=30)
        parked = {p.position: p for p in store.parked("traced_owners")}
        with log.engine.connect() as conn:
            applied = conn.execute(sa.select(owners.c.id)).scalars().all()
    assert sorted(parked) == [1, 3]
    assert applied == ["y"]
    refused, failed = parked[1].detail or "", parked[3].detail or ""
    assert "NOT NULL" in refused.upper() or "NotNullViolation" in refused, refused
    assert "a bug met" not in refused, refused
    assert "a bug met at z" in failed and "which was followed by" not in failed, failed
