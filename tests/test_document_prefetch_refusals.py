"""A key a document store refuses (an integer past 64 bits, which BSON cannot hold) given to
``tx.prefetch``, by a handler or by the projection's ``prefetch`` hook, is the failure of the
event whose key it is, as in the table stores (tests/test_prefetch_refusals.py): live, that
event is parked at its first failure and the others are applied; a replay with
``--skip-errors`` skips it and rebuilds the rest; events held behind a parked or skipped one
are not given to the hook (nor does a replay fail on their keys)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from outbox.envelope import Envelope
from outbox.log import EventLog
from projections.api import Event, Projection, Tx, on
from projections.document_generations import collections_at, generation_of
from projections.document_replay import DocumentReplayer
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.replay_types import ReplayOptions
from projections.store import Lane
from tests.projection_fixtures import log_events

WIDE = str(2**70)  # a number the projection keys by: past what BSON's int64 holds
_EVENTS = [("a", "Hit", {"id": "1"}), ("b", "Hit", {"id": WIDE}), ("c", "Hit", {"id": "2"})]


class _InHandler(Projection):
    name = "doc_prefetch_counts"
    store = "docs"
    collections = ("doc_prefetch_counts",)
    partitions = 1

    @on("shop", "Hit")
    def hit(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        if event.payload.get("fail"):
            raise RuntimeError("this hit fails")
        key = int(event.payload["id"])
        self.read(tx, key)
        found = tx.get("doc_prefetch_counts", key)  # type: ignore[arg-type]
        n = (found["n"] if found else 0) + 1
        tx.upsert("doc_prefetch_counts", {"_id": key, "n": n})  # type: ignore[arg-type]

    def read(self, tx: Tx, key: Any) -> None:
        tx.prefetch("doc_prefetch_counts", [key])  # type: ignore[arg-type]


class _Hooked(_InHandler):
    """Prefetches every key of the batch before its handlers."""

    def prefetch(self, events: Sequence[Envelope], tx: Tx) -> None:
        keys = [int(event.payload["id"]) for event in events]
        tx.prefetch("doc_prefetch_counts", keys)  # type: ignore[arg-type]

    def read(self, tx: Tx, key: Any) -> None:
        pass


class _Setup:
    def __init__(self, log_url: str, url: str, projection: Projection) -> None:
        self.log = EventLog(log_url)
        self.log.create_tables()
        self.store = MongoStore(url)
        self.projection = projection
        self.store.create_tables([projection])
        self.engine = ProjectionEngine(
            LogReader(self.log),
            [projection],
            {"docs": self.store},
            max_attempts=5,
            retry_backoff=30,
            batch_size=10,
        )

    def counts(self) -> dict[int, int]:
        """The documents of the projection's current generation: ``_id`` -> ``n``."""
        database = self.store.database
        physical = collections_at(self.projection, generation_of(database, self.projection.name))
        found = database[physical["doc_prefetch_counts"]].find()
        return {document["_id"]: document["n"] for document in found}

    def close(self) -> None:
        self.engine.close()
        self.store.close()
        self.log.close()


@pytest.fixture(params=[_InHandler, _Hooked], ids=["in-handler", "hook"])
def setup(
    request: pytest.FixtureRequest,
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
) -> Iterator[_Setup]:
    made = _Setup(pg_database(), mongo_database(), request.param())
    yield made
    made.close()


def test_live_a_refused_prefetch_key_parks_its_event_at_the_first_failure(
    setup: _Setup,
) -> None:
    log_events(setup.log, _EVENTS)
    progress = setup.engine.process(Lane(setup.projection.name, "shop", 0))
    parked = setup.store.parked(setup.projection.name)
    assert progress.checkpoint == 3
    assert [(p.aggregate_id, p.attempts) for p in parked] == [("b", 1)]
    assert "refused for good" in parked[0].reason, parked[0].reason
    assert "doc_prefetch_counts" in parked[0].reason, parked[0].reason
    assert WIDE not in parked[0].reason
    assert setup.counts() == {1: 1, 2: 1}


def test_a_replay_skips_the_event_of_a_refused_prefetch_key(setup: _Setup) -> None:
    log_events(setup.log, _EVENTS)
    replayer = DocumentReplayer(
        LogReader(setup.log), setup.projection, setup.store, batch_size=10, retire_after=0.0
    )
    summary = replayer.run(ReplayOptions(skip_errors=True))  # a blue/green rebuild
    assert [s.position for s in summary.skipped] == [2]
    assert "doc_prefetch_counts" in summary.skipped[0].error, summary.skipped[0].error
    assert WIDE not in summary.skipped[0].error
    assert setup.counts() == {1: 1, 2: 1}


def test_a_replay_does_not_prefetch_the_events_held_behind_a_skipped_one(setup: _Setup) -> None:
    """The refused key is b's, held behind b's failed event: the rebuild skips both."""
    events = [("b", "Hit", {"id": "3", "fail": True}), *_EVENTS]
    log_events(setup.log, events)
    replayer = DocumentReplayer(
        LogReader(setup.log), setup.projection, setup.store, batch_size=10, retire_after=0.0
    )
    summary = replayer.run(ReplayOptions(skip_errors=True))
    assert [s.position for s in summary.skipped] == [1, 3]
    assert "this hit fails" in summary.skipped[0].error
    assert summary.skipped[1].error.startswith("held: "), summary.skipped[1].error
    assert setup.counts() == {1: 1, 2: 1}
