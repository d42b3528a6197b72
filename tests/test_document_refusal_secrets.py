"""A document the driver cannot send for what it holds (a value BSON cannot encode, a key
that is no string, text that is not UTF-8) parks its event saying why and the type, never
the value nor the key (a mapping's keys are data): pymongo's message quotes them (``cannot
encode object: {...}, of type: <class 'set'>``), and it was the parked reason, its
traceback and the log's error. So does a duplicate of a unique index's key, whose bulk
write error held the whole document and the key's value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from outbox.log import EventLog
from projections.api import Event, Projection, on
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.store import Lane
from tests.projection_fixtures import append_tenant_events

SECRET = "hunter2-s3cr3t"


class Holder:
    def __repr__(self) -> str:
        return f"Holder({SECRET})"


VALUES: dict[str, Any] = {
    "set": {"n": {SECRET}},
    "object": {"n": Holder()},
    "surrogate": {"n": f"{SECRET}\udc80"},
    "int key": {"n": {7: SECRET}},
}


class SecretDocs(Projection):
    name = "secret_docs"
    store = "docs"
    collections = ("secret_docs",)
    partitions = 1

    @on("bank", "Put")
    def put(self, event: Event[dict], tx: Any) -> None:
        tx.upsert("secret_docs", {"_id": event.aggregate_id, **VALUES[event.payload["use"]]})


@pytest.mark.parametrize("batch_size", [1, 50])
def test_a_document_the_driver_refuses_is_parked_without_its_values(
    batch_size: int, pg_database: Callable[[], str], mongo_database: Callable[[], str]
) -> None:
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    projection = SecretDocs()
    store.create_tables([projection])
    engine = ProjectionEngine(
        LogReader(log),
        [projection],
        {"docs": store},
        max_attempts=5,
        retry_backoff=30,
        batch_size=batch_size,
    )
    uses = list(VALUES)
    try:
        append_tenant_events(log, [(None, use, "Put", {"use": use}) for use in uses])
        lane = Lane(projection.name, "bank", 0)
        with capture_logs() as logs:
            for _ in range(len(uses) + 1):
                if engine.process(lane).checkpoint == len(uses):
                    break
        parked = {p.aggregate_id: p for p in store.parked(projection.name)}
    finally:
        engine.close()
        store.close()
        log.close()
    assert sorted(parked) == sorted(uses)
    for entry in parked.values():
        assert "refused for good, not retried" in entry.reason, entry.reason
        assert SECRET not in entry.reason, entry.reason
        assert SECRET not in (entry.detail or ""), entry.detail
    for line in logs:
        assert SECRET not in repr(line), line
    assert "of type set" in parked["set"].reason, parked["set"].reason
    assert "of type tests.test_document_refusal_secrets.Holder" in parked["object"].reason
    assert "UTF-8" in parked["surrogate"].reason, parked["surrogate"].reason


class UniqueDocs(Projection):
    name = "unique_docs"
    store = "docs"
    collections = ("unique_docs",)
    partitions = 1

    @on("bank", "Put")
    def put(self, event: Event[dict], tx: Any) -> None:
        tx.upsert("unique_docs", {"_id": event.aggregate_id, **event.payload})


@pytest.mark.parametrize("batch_size", [1, 50])
def test_a_duplicate_of_a_unique_index_is_parked_without_its_values(
    batch_size: int, pg_database: Callable[[], str], mongo_database: Callable[[], str]
) -> None:
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    projection = UniqueDocs()
    store.create_tables([projection])
    store.database["unique_docs"].create_index("email", unique=True, name="email_unique")
    engine = ProjectionEngine(
        LogReader(log), [projection], {"docs": store}, max_attempts=1, batch_size=batch_size
    )
    events = [(None, f"u{n}", "Put", {"email": f"{SECRET}@a", "token": SECRET}) for n in (1, 2)]
    try:
        append_tenant_events(log, events)
        with capture_logs() as logs:
            for _ in range(3):
                if engine.process(Lane(projection.name, "bank", 0)).checkpoint == 2:
                    break
        parked = store.parked(projection.name)
    finally:
        engine.close()
        store.close()
        log.close()
    assert [p.aggregate_id for p in parked] == ["u2"]
    assert "email_unique" in parked[0].reason and "11000" in parked[0].reason, parked[0].reason
    assert SECRET not in parked[0].reason, parked[0].reason
    assert SECRET not in (parked[0].detail or ""), parked[0].detail
    for line in logs:
        assert SECRET not in repr(line), line
