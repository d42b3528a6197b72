"""A document projection's handler that raises a MongoDB error of its own (a write on its
own client refused for a duplicate key, a bulk write's, a validator's, a value BSON cannot
encode, or its own error raised from one) fails its event without the values the error
quotes: pymongo's message holds the duplicate key's value (``dup key: {...}``) and the
whole error document (``full error: {...}``), bson's the value, and it was the
parked reason, the parked traceback, the ``event parked`` log line and a strict replay's
error. The error's type, its message without them and the index name stay.

Before: the handler's error as pymongo raised it (its repr, its traceback's last line)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from pymongo import ASCENDING, MongoClient, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from structlog.testing import capture_logs

from outbox.log import EventLog
from projections.api import Event, Projection, on
from projections.document_replay import DocumentReplayer
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.replay_types import ReplayError, ReplayOptions
from tests.projection_fixtures import log_events

PLANTED = "planted-secret@example.com"


class Enrolments(Projection):
    """Its handler writes the person's address into a collection of its own through its
    own client (a unique index on ``email``, a validator on ``age``), then a document."""

    name = "doc_enrolments"
    store = "docs"
    collections = ("doc_enrolments",)
    partitions = 1
    database: ClassVar[Database[dict[str, Any]] | None] = None

    @on("crm", "Enrolled")
    def enrolled(self, event: Event[dict], tx: Any) -> None:
        assert self.database is not None
        people = self.database["people"]
        payload, key = event.payload, {"_id": event.aggregate_id}
        how = payload.get("how", "update_one")
        if how == "update_one":
            people.update_one(key, {"$set": {"email": payload["email"]}}, upsert=True)
        elif how == "bulk_write":
            people.bulk_write([UpdateOne(key, {"$set": {"email": payload["email"]}}, upsert=True)])
        elif how == "wrapped":
            try:
                people.update_one(key, {"$set": {"email": payload["email"]}}, upsert=True)
            except DuplicateKeyError as exc:
                raise LookupError("the enrolment failed") from exc
        elif how == "unencodable":  # bson's InvalidDocument, quoting the set
            people.update_one(key, {"$set": {"emails": {payload["email"]}}}, upsert=True)
        elif how == "validator":
            self.database["checked"].update_one(
                key, {"$set": {"age": payload["email"]}}, upsert=True
            )
        tx.upsert("doc_enrolments", {"_id": event.aggregate_id})


@pytest.fixture
def own_database(mongo_database: Callable[[], str]) -> Iterator[Database[dict[str, Any]]]:
    """The handler's database: ``people`` holding :data:`PLANTED` under a unique index, and
    ``checked``, whose validator takes only an integer ``age``."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_database())
    database = client.get_default_database()
    database["people"].create_index([("email", ASCENDING)], unique=True)
    database["people"].insert_one({"_id": "taken", "email": PLANTED})
    database.create_collection(
        "checked", validator={"$jsonSchema": {"properties": {"age": {"bsonType": "int"}}}}
    )
    Enrolments.database = database
    yield database
    Enrolments.database = None
    client.close()


@pytest.mark.parametrize("batch_size", [1, 50])
@pytest.mark.parametrize(
    ("how", "told"),
    [
        ("update_one", "DuplicateKeyError"),
        ("bulk_write", "BulkWriteError"),
        ("validator", "WriteError"),
        ("wrapped", "LookupError('the enrolment failed')"),
        ("unencodable", "InvalidDocument"),
    ],
)
def test_a_handlers_own_mongodb_error_is_parked_without_the_value(
    how: str,
    told: str,
    batch_size: int,
    own_database: Database[dict[str, Any]],
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
) -> None:
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    store.create_tables([Enrolments()])
    events = [
        ("p0", "Enrolled", {"email": "fresh@example.com", "how": "update_one"}),
        ("p1", "Enrolled", {"email": PLANTED, "how": how}),
    ]
    log_events(log, events, source="crm", aggregate_type="person")
    engine = ProjectionEngine(
        LogReader(log),
        [Enrolments()],
        {"docs": store},
        batch_size=batch_size,
        max_attempts=1,
        retry_backoff=0,
    )
    try:
        with capture_logs() as logs:
            engine.catch_up()
        (parked,) = store.parked(Enrolments.name)
    finally:
        engine.close()
        store.close()
        log.close()
    assert parked.aggregate_id == "p1"
    assert told in parked.reason, parked.reason
    if how == "validator":
        assert "Document failed validation" in parked.reason, parked.reason
    elif how == "unencodable":
        assert "cannot encode a value of type set" in parked.reason, parked.reason
    elif how != "wrapped":
        assert "index: email_1" in parked.reason, parked.reason
    detail = parked.detail or ""
    if how == "wrapped":  # the handler's error its own; the one it was raised from, kept
        assert "DuplicateKeyError: " in detail and "index: email_1" in detail, detail
    elif how == "unencodable":
        assert "InvalidDocument: " in detail and "type set" in detail, detail
    elif how == "validator":
        assert "WriteError: " in detail and "(code 121" in detail, detail
    else:
        assert f"{told}: " in detail and "index: email_1" in detail, detail
    assert any(line.get("event") == "event parked" for line in logs), logs
    for text in (parked.reason, parked.detail or "", repr(logs)):
        assert PLANTED not in text, text
        assert "dup key" not in text, text


def test_a_strict_replay_stops_at_a_handlers_own_duplicate_without_the_value(
    own_database: Database[dict[str, Any]],
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
) -> None:
    people: Collection[dict[str, Any]] = own_database["people"]
    people.delete_one({"_id": "taken"})
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    store.create_tables([Enrolments()])
    events = [
        ("p0", "Enrolled", {"email": "fresh@example.com"}),
        ("p1", "Enrolled", {"email": PLANTED}),
    ]
    log_events(log, events, source="crm", aggregate_type="person")
    engine = ProjectionEngine(LogReader(log), [Enrolments()], {"docs": store}, retry_backoff=0)
    try:
        engine.catch_up()
        assert store.parked(Enrolments.name) == []
        people.delete_one({"_id": "p1"})
        people.insert_one({"_id": "taken", "email": PLANTED})
        with capture_logs() as logs:
            with pytest.raises(ReplayError) as stopped:
                replayer = DocumentReplayer(
                    LogReader(log), Enrolments(), store, batch_size=10, retire_after=0.0
                )
                replayer.run(ReplayOptions())
            summary = DocumentReplayer(
                LogReader(log), Enrolments(), store, batch_size=10, retire_after=0.0
            ).run(ReplayOptions(skip_errors=True))
    finally:
        engine.close()
        store.close()
        log.close()
    message = str(stopped.value)
    assert "replay stopped at crm:2 (Enrolled of person:p1)" in message, message
    assert "DuplicateKeyError" in message and "index: email_1" in message, message
    assert PLANTED not in message and PLANTED not in repr(stopped.value.error), message
    assert [s.position for s in summary.skipped] == [2]
    (skipped,) = summary.skipped
    assert "index: email_1" in skipped.error, skipped.error
    for text in (skipped.error, skipped.detail or "", repr(logs)):
        assert PLANTED not in text, text
