"""Cache tags a document projection's handler gives ``tx.invalidate``: strings, as in a SQL
projection; anything else fails that handler (retried, then parked), never the batch's
invalidation after its commit, nor the redo of every journaled invalidation after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from outbox.log import EventLog
from projections.api import Event, on
from projections.cache import MemoryCache
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from tests.document_fixtures import DocTotals
from tests.projection_fixtures import log_events


class ProductTags(DocTotals):
    """:class:`DocTotals`, invalidating the payload's ``product`` as a tag, as it is."""

    name = "doc_product_tags"
    collections = ("doc_product_tags",)
    key_tags = {"doc_product_tags": "account:{_id}"}

    @on("bank", "Deposited")
    def deposited(self, event: Event[dict], tx: Any) -> None:
        tx.invalidate(event.payload["product"])
        tx.upsert("doc_product_tags", {"_id": event.aggregate_id, "seq": event.payload["seq"]})


@pytest.fixture
def engine(
    pg_database: Callable[[], str], mongo_database: Callable[[], str]
) -> Iterator[tuple[EventLog, MongoStore, ProjectionEngine]]:
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    store.create_tables([ProductTags()])
    made = ProjectionEngine(
        LogReader(log),
        [ProductTags()],
        {"docs": store},
        cache=MemoryCache(),
        max_attempts=1,
        retry_backoff=0,
    )
    yield log, store, made
    made.close()
    log.close()


def test_a_tag_that_is_no_string_parks_its_event_and_the_rest_flow(
    engine: tuple[EventLog, MongoStore, ProjectionEngine],
) -> None:
    log, store, made = engine
    events = [
        ("a", "Deposited", {"amount": 1, "seq": 1, "product": 42}),  # an int, not "product:42"
        ("b", "Deposited", {"amount": 1, "seq": 1, "product": "product:7"}),
    ]
    log_events(log, events, source="bank", aggregate_type="account")
    made.catch_up()
    [parked] = store.parked("doc_product_tags")
    assert parked.aggregate_id == "a"
    assert "cache tags are strings, got 42" in parked.reason
    assert store.database["doc_product_tags"].find_one({"_id": "b"}) is not None
    assert store.pending_invalidations() == []
    assert made.redo_invalidations() == 0
