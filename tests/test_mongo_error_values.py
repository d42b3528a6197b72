"""``outbox.mongo_connection.describe_mongo_error`` tells a MongoDB error without the values
the server or the driver quotes: no ``dup key: {...}``, no ``full error: {...}`` (the
refused document, a bulk write's ``op``, a validator's ``consideredValue``), no value BSON
cannot encode; the error code and the index name stay.

Before: the message's first line, cut at 300 characters: a duplicate key's value (personal
data of a read model: an e-mail address) reached store and source errors, ``status``,
replay errors and log lines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo import ASCENDING, MongoClient, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import PyMongoError
from structlog.testing import capture_logs

from config import SourceSettings
from outbox.error_text import describe_error
from outbox.errors import ReadmodelError
from outbox.log import EventLog
from outbox.mongo_connection import describe_mongo_error
from projections.api import Event, Projection, on
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.reference.chat_service import INDEXES, MESSAGES
from projections.reference.chat_writer import ChatWriter, insert_doc
from tests.projection_fixtures import log_events

PLANTED = "planted-secret@example.com"


@pytest.fixture
def people(mongo_database: Callable[[], str]) -> Iterator[Collection[dict[str, Any]]]:
    """A collection with a unique index on ``email`` and a document holding :data:`PLANTED`."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_database())
    collection = client.get_default_database()["people"]
    collection.create_index([("email", ASCENDING)], unique=True)
    collection.insert_one({"_id": 1, "email": PLANTED, "note": f"note of {PLANTED}"})
    collection.insert_one({"_id": 2, "email": "other@example.com"})
    yield collection
    client.close()


def _raised(work: Callable[[], object]) -> PyMongoError:
    with pytest.raises(PyMongoError) as raised:
        work()
    assert PLANTED in str(raised.value)  # what the driver tells, values and all
    return raised.value


def test_duplicate_keys_are_told_by_index_and_code(people: Collection[dict[str, Any]]) -> None:
    refused = {
        "insert_one": lambda: people.insert_one({"_id": 3, "email": PLANTED}),
        "update_one": lambda: people.update_one({"_id": 2}, {"$set": {"email": PLANTED}}),
        "find_one_and_update": lambda: people.find_one_and_update(
            {"_id": 2}, {"$set": {"email": PLANTED}}
        ),
        "insert_many": lambda: people.insert_many([{"_id": 4, "email": PLANTED, "n": PLANTED}]),
        "bulk_write": lambda: people.bulk_write(
            [UpdateOne({"_id": 5}, {"$set": {"email": PLANTED}}, upsert=True)]
        ),
    }
    for how, work in refused.items():
        exc = _raised(work)
        text = describe_mongo_error(exc)
        assert PLANTED not in text, (how, text)
        assert "dup key" not in text and "full error" not in text, (how, text)
        assert f"duplicate key error collection: {people.full_name} index: email_1" in text, (
            how,
            text,
        )
        assert text.startswith(f"{type(exc).__name__}: "), (how, text)
        assert "11000" in text, (how, text)
        assert "\n" not in text


def test_a_bulk_write_is_told_by_its_count_and_first_error(
    people: Collection[dict[str, Any]],
) -> None:
    exc = _raised(lambda: people.insert_many([{"_id": 6, "email": PLANTED}], ordered=True))
    assert describe_mongo_error(exc) == (
        f"BulkWriteError: batch op errors occurred: 1 write error, the first: E11000 duplicate "
        f"key error collection: {people.full_name} index: email_1"
    )


def test_a_refused_document_is_not_echoed(mongo_database: Callable[[], str]) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_database())
    try:
        database = client.get_default_database()
        database.create_collection(
            "checked",
            validator={"$jsonSchema": {"properties": {"age": {"bsonType": "int"}}}},
        )
        validated = _raised(lambda: database["checked"].insert_one({"age": PLANTED}))
        database["people"].insert_one({"_id": 1, "email": PLANTED})
        echoed = _raised(
            lambda: database["people"].update_one({"_id": 1}, {"$set": {"email.domain": "x"}})
        )
        with pytest.raises(Exception) as unencodable:  # bson's InvalidDocument
            database["checked"].insert_one({"tags": {PLANTED}})
    finally:
        client.close()
    text = describe_mongo_error(validated)
    assert text.startswith("WriteError: Document failed validation"), text
    assert "121" in text and PLANTED not in text, text
    assert describe_mongo_error(echoed) == (
        "WriteError: Plan executor error during update :: caused by :: Cannot create field "
        "'domain' in element {...} (code 28)"
    )
    assert PLANTED in str(unencodable.value)
    text = describe_mongo_error(unencodable.value)
    assert text == "InvalidDocument: Invalid document: cannot encode a value of type set", text
    assert describe_error(unencodable.value) == text  # a log line's, no longer its message


class People(Projection):
    """One document per person, ``email`` from the payload (a hand-made unique index on it
    refuses a second person with the same address)."""

    name = "doc_people"
    store = "docs"
    collections = ("doc_people",)

    @on("crm", "Registered")
    def registered(self, event: Event[dict], tx: Any) -> None:
        tx.upsert("doc_people", {"_id": event.aggregate_id, "email": event.payload["email"]})


def test_a_document_projections_duplicate_is_parked_without_the_value(
    pg_database: Callable[[], str], mongo_database: Callable[[], str]
) -> None:
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    store.create_tables([People()])
    store.database["doc_people"].create_index([("email", ASCENDING)], unique=True)
    events = [("p1", "Registered", {"email": PLANTED}), ("p2", "Registered", {"email": PLANTED})]
    log_events(log, events, source="crm", aggregate_type="person")
    engine = ProjectionEngine(
        LogReader(log), [People()], {"docs": store}, max_attempts=1, retry_backoff=0
    )
    try:
        with capture_logs() as logs:
            engine.catch_up()
        (parked,) = store.parked("doc_people")
    finally:
        engine.close()
        store.close()
        log.close()
    assert parked.aggregate_id == "p2"
    assert "index: email_1" in parked.reason, parked.reason
    for text in (parked.reason, parked.detail or "", repr(logs)):
        assert PLANTED not in text, text


def test_the_chat_writers_duplicate_is_told_without_the_key(
    mongo_database: Callable[[], str],
) -> None:
    url = mongo_database()
    writer = ChatWriter(SourceSettings(url=url, table="outbox"))
    for keys, unique in INDEXES[MESSAGES]:
        writer.database[MESSAGES].create_index(keys, unique=unique)
    message = {"conversation_id": PLANTED, "number": 1, "text": "hello"}
    writer.submit([insert_doc(MESSAGES, {"_id": "m1", **message})], [], [])
    writer.submit([insert_doc(MESSAGES, {"_id": "m2", **message})], [], [])
    with pytest.raises(ReadmodelError) as raised:
        writer.close()
    text = str(raised.value)
    assert PLANTED not in text, text
    assert "index: conversation_id_1_number_1" in text, text
    assert text.startswith("source 'chat': DuplicateKeyError: "), text
