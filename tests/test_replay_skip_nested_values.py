"""A handler that changes a value of a row it read in place (a JSON column's list, a
PickleType's object), then fails: a rebuild skipping its event in memory
(:meth:`SqlTx.undo`) must not keep that change. The row it read shares those values with
the batch's pending write or the row read from the table, so the next event's handler read
the failed one's change and wrote it (the skipped event's tag in the rebuilt row); rolled
back and applied again, as before the in-memory skip, it did not.
PostgreSQL and SQLite; the failed event's row in the pending writes (one transaction) or
read from the table (the second of two)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from outbox.log import EventLog
from projections.api import Event, Projection, Tx, on
from projections.log_reader import LogReader
from projections.replay import Replayer
from projections.replay_types import ReplayOptions
from projections.sql_store import SqlStore
from tests.projection_fixtures import append_tenant_events

bags = sa.Table(
    "nested_bags",
    sa.MetaData(),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("seen", sa.PickleType, nullable=False),
)


class Seen:
    """A value of a type of its own (a column type's), changed in place."""

    def __init__(self) -> None:
        self.tags: list[str] = []

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Seen) and other.tags == self.tags


class Bags(Projection):
    name = "nested_bags"
    tables = (bags,)

    @on("bags", "Tagged")
    def tagged(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        row = tx.get(bags, "bag") or {"id": "bag", "tags": {"seen": []}, "seen": Seen()}
        row["tags"]["seen"].append(event.payload["tag"])  # in place, before it may fail
        row["seen"].tags.append(event.payload["tag"])
        if event.payload.get("fail"):
            raise ValueError("a bug met after the change")
        tx.upsert(bags, row)


@pytest.mark.parametrize("batch", [2, 10])
def test_a_skipped_handlers_change_in_place_of_a_value_it_read_is_not_kept(
    store_url: str, batch: int
) -> None:
    log = EventLog(store_url)
    try:
        log.create_tables()
        store = SqlStore(store_url, engine=log.engine)
        store.create_tables([Bags()])
        tags = [{"tag": "a"}, {"tag": "b"}, {"tag": "skipped", "fail": True}, {"tag": "c"}]
        events = [(None, f"bag{n}", "Tagged", tag) for n, tag in enumerate(tags)]
        append_tenant_events(log, events, source="bags", aggregate_type="bag")
        replayer = Replayer(LogReader(log), Bags(), store, batch_size=batch)
        summary = replayer.run(ReplayOptions(skip_errors=True))
        with log.engine.connect() as conn:
            row = conn.execute(sa.select(bags)).one()
    finally:
        log.close()
    assert [s.position for s in summary.skipped] == [3]
    assert row.tags == {"seen": ["a", "b", "c"]}
    assert row.seen.tags == ["a", "b", "c"]
