"""A key its column refuses (text no integer is, into an integer key) given to
``tx.prefetch`` raises what ``tx.get`` of it raises, :class:`UnstorableValueError` naming the
column, not :class:`RefusedWrite` wrapping it (taken for a refusal of the Tx's own statements):
nothing was sent, and the transaction goes on. Live and in a replay, the event whose key it
is fails, refused for good (parked at the first failure, skipped by ``--skip-errors``), and
the others are applied, whether a handler or the projection's ``prefetch`` hook asked."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from outbox.envelope import Envelope
from projections.api import Event, Projection, Tx, UnstorableValueError, on
from projections.replay import Replayer, ReplayOptions
from projections.sql_tx import SqlTx
from projections.store import Lane
from tests.projection_fixtures import engine_on, log_events

metadata = sa.MetaData()
counts = sa.Table(
    "prefetch_counts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("n", sa.Integer),
)
_EVENTS = [("a", "Hit", {"id": 1}), ("b", "Hit", {"id": "abc"}), ("c", "Hit", {"id": 2})]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("batch_prefetch", [False, True])
def test_prefetch_of_a_refused_key_raises_what_get_raises(
    kind: str, batch_prefetch: bool, database_for: Callable[[str], str]
) -> None:
    engine = create_engine(database_for(kind))
    metadata.create_all(engine)
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, {counts: counts}, batch_prefetch=batch_prefetch)
            tx.upsert(counts, {"id": 1, "n": 1})
            tx.flush()
            outcomes = []
            for read in (lambda: tx.get(counts, "abc"), lambda: tx.prefetch(counts, [1, "abc"])):
                try:
                    read()
                    outcomes.append(None)  # SQLite: text in its rowid key finds no row
                except Exception as exc:  # noqa: BLE001 - compared
                    outcomes.append((type(exc), str(exc)))
            assert outcomes[0] == outcomes[1]
            if kind == "postgresql":
                assert outcomes[0] is not None and outcomes[0][0] is UnstorableValueError
                assert outcomes[0][1].startswith("prefetch_counts.id "), outcomes[0]
                assert "abc" not in outcomes[0][1]
            assert tx.get(counts, 1) == {"id": 1, "n": 1}  # the transaction goes on
    finally:
        engine.dispose()


class _InHandler(Projection):
    name = "prefetch_counts"
    tables = (counts,)
    partitions = 1

    @on("shop", "Hit")
    def hit(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        key = event.payload["id"]
        self.read(tx, key)
        row = tx.get(counts, key)
        tx.upsert(counts, {"id": key, "n": (row["n"] if row else 0) + 1})

    def read(self, tx: Tx, key: Any) -> None:
        tx.prefetch(counts, [key])


class _Hooked(_InHandler):
    """Prefetches every key of the batch before its handlers."""

    def prefetch(self, events: Sequence[Envelope], tx: Tx) -> None:
        tx.prefetch(counts, [event.payload["id"] for event in events])

    def read(self, tx: Tx, key: Any) -> None:
        pass


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("projection_type", [_InHandler, _Hooked])
def test_live_a_refused_prefetch_key_parks_its_event_at_the_first_failure(
    kind: str, projection_type: type[_InHandler], database_for: Callable[[str], str]
) -> None:
    projection = projection_type()
    url = database_for(kind)
    with engine_on(url, [projection], max_attempts=5, retry_backoff=30, batch_size=10) as (
        log,
        store,
        engine,
    ):
        log_events(log, _EVENTS)
        progress = engine.process(Lane(projection.name, "shop", 0))
        parked = store.parked(projection.name)
        with log.engine.connect() as conn:
            rows = dict(conn.execute(sa.select(counts.c.id, counts.c.n)).all())
    assert progress.checkpoint == 3
    assert [(p.aggregate_id, p.attempts) for p in parked] == [("b", 1)]
    assert "refused for good, not retried" in parked[0].reason, parked[0].reason
    assert "prefetch_counts.id cannot hold" in parked[0].reason, parked[0].reason
    assert "abc" not in parked[0].reason
    assert rows == {1: 1, 2: 1}


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("projection_type", [_InHandler, _Hooked])
def test_a_replay_skips_the_event_of_a_refused_prefetch_key(
    kind: str, projection_type: type[_InHandler], database_for: Callable[[str], str]
) -> None:
    projection = projection_type()
    with engine_on(database_for(kind), [projection]) as (log, store, engine):
        log_events(log, _EVENTS)
        replayer = Replayer(engine.reader, projection, store, batch_size=10)
        summary = replayer.run(ReplayOptions(skip_errors=True))  # a blue/green rebuild
        with log.engine.connect() as conn:
            rows = dict(conn.execute(sa.select(counts.c.id, counts.c.n)).all())
    assert [s.position for s in summary.skipped] == [2]
    assert "prefetch_counts.id cannot hold" in summary.skipped[0].error
    assert "abc" not in summary.skipped[0].error
    assert rows == {1: 1, 2: 1}
