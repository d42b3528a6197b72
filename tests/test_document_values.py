"""A document projection's handler reads back what it wrote as a later batch reads it (as BSON
stores it): a tuple as a list, a datetime in UTC to the millisecond, an IntEnum as an int...
so batch boundaries (a batch of one, one big batch, a rebuild's) never change what a
handler observes. A value BSON cannot hold is refused by the upsert itself, naming the
collection, the ``_id``, the field and the type, never the value."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from bson import Binary, Int64

from outbox.log import EventLog
from projections.api import Event, Projection, UnstorableValueError, on
from projections.document_generations import collections_at, generation_of
from projections.document_replay import DocumentReplayer
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.mongo_tx import DocumentTx
from projections.replay_types import ReplayOptions
from tests.projection_fixtures import append_tenant_events

SECRET = "s3cr3t-v4lue"


class Level(enum.IntEnum):
    HIGH = 3


class Label(str):
    pass


class Ratio(float):
    pass


ZONE = timezone(timedelta(hours=2))
# name: the value a handler writes (as built from the payload)
VALUES: dict[str, Callable[[], Any]] = {
    "tuple": lambda: (1, "a"),
    "nested tuple": lambda: {"lines": [(1, 2)]},
    "zoned datetime": lambda: datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=ZONE),
    "naive datetime": lambda: datetime(2026, 3, 1, 12, 0, 0, 654321),
    "int enum": lambda: Level.HIGH,
    "str subclass": lambda: Label("x"),
    "float subclass": lambda: Ratio(0.5),
    "Int64": lambda: Int64(5),
    "int past 32 bits": lambda: 2**40,  # stored as a BSON int64: read back as an Int64
    "binary subtype 0": lambda: Binary(b"ab", 0),
}
# name: (value, the type the refusal names)
REFUSED: dict[str, tuple[Any, str]] = {
    "decimal": ({"amount": Decimal("1.5")}, "decimal.Decimal"),
    "set": ({"tags": {SECRET}}, "set"),
    "date": ({"on": date(2026, 3, 1)}, "datetime.date"),
    "int key": ({"by": {7: SECRET}}, "string keys"),
}


class DocValues(Projection):
    """``Wrote`` writes a value; ``Read`` reads it back into ``seen`` (its repr: what the
    handler observed, type and all) and ``later`` (whether it is before a UTC moment:
    a naive datetime cannot be compared with one)."""

    name = "doc_values"
    store = "docs"
    collections = ("doc_values",)
    partitions = 1

    @on("bank", "Wrote")
    def wrote(self, event: Event[dict], tx: Any) -> None:
        tx.upsert("doc_values", {"_id": event.aggregate_id, "value": VALUES[event.aggregate_id]()})

    @on("bank", "Read")
    def read(self, event: Event[dict], tx: Any) -> None:
        document = tx.get("doc_values", event.aggregate_id)
        value = document["value"]
        document["seen"] = f"{type(value).__name__} {value!r}"
        if isinstance(value, datetime):
            try:
                document["later"] = value < datetime(2027, 1, 1, tzinfo=UTC)
            except TypeError as exc:  # naive against aware
                document["later"] = type(exc).__name__
        tx.upsert("doc_values", document)

    @on("bank", "Refused")
    def refused(self, event: Event[dict], tx: Any) -> None:
        value, _ = REFUSED[event.aggregate_id]
        try:
            tx.upsert("doc_values", {"_id": event.aggregate_id, "kept": value})
        except UnstorableValueError as exc:  # written another way: the refusal is at once
            tx.upsert("doc_values", {"_id": event.aggregate_id, "refused": str(exc)})


@pytest.fixture
def log_and_store(
    pg_database: Callable[[], str], mongo_database: Callable[[], str]
) -> Iterator[tuple[EventLog, Callable[[], MongoStore]]]:
    log = EventLog(pg_database())
    log.create_tables()
    stores: list[MongoStore] = []

    def store() -> MongoStore:
        made = MongoStore(mongo_database())
        made.create_tables([DocValues()])
        stores.append(made)
        return made

    yield log, store
    for made in stores:
        made.close()  # again, for one no engine closed
    log.close()


def _documents(log: EventLog, store: MongoStore, batch_size: int) -> dict[str, Any]:
    engine = ProjectionEngine(
        LogReader(log), [DocValues()], {"docs": store}, batch_size=batch_size, max_attempts=1
    )
    try:
        engine.catch_up(deadline=60)
        parked = [(p.aggregate_id, p.reason) for p in store.parked("doc_values")]
        found = {d["_id"]: d for d in store.database["doc_values"].find()}
    finally:
        engine.close()  # closes the store
    assert parked == []
    return found


def _rebuilt(log: EventLog, store: MongoStore) -> dict[str, Any]:
    """The documents of a rebuild (one batch) of the whole log."""
    projection = DocValues()
    DocumentReplayer(LogReader(log), projection, store, batch_size=1000, retire_after=0.0).run(
        ReplayOptions()
    )
    name = collections_at(projection, generation_of(store.database, projection.name))
    return {d["_id"]: d for d in store.database[name["doc_values"]].find()}


def test_a_value_read_back_is_the_same_in_its_own_batch_and_a_later_one(
    log_and_store: tuple[EventLog, Callable[[], MongoStore]],
) -> None:
    log, store = log_and_store
    names = list(VALUES)
    append_tenant_events(
        log, [(None, n, "Wrote", {}) for n in names] + [(None, n, "Read", {}) for n in names]
    )

    one_by_one = _documents(log, store(), batch_size=1)
    all_at_once = _documents(log, store(), batch_size=1000)
    rebuilt = _rebuilt(log, store())

    assert all_at_once == one_by_one
    assert rebuilt == one_by_one
    assert one_by_one["tuple"]["seen"] == "list [1, 'a']"
    assert one_by_one["nested tuple"]["seen"] == "dict {'lines': [[1, 2]]}"
    assert one_by_one["int enum"]["seen"] == "int 3"
    assert one_by_one["str subclass"]["seen"] == "str 'x'"
    assert one_by_one["float subclass"]["seen"] == "float 0.5"
    assert one_by_one["Int64"]["seen"] == "Int64 5"
    assert one_by_one["int past 32 bits"]["seen"] == f"Int64 {2**40}"
    assert one_by_one["binary subtype 0"]["seen"] == "bytes b'ab'"
    zoned = one_by_one["zoned datetime"]
    assert zoned["value"] == datetime(2026, 3, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert "123000" in zoned["seen"] and zoned["later"] is True
    naive = all_at_once["naive datetime"]
    assert naive["later"] is True  # read back aware (UTC), in its own batch too
    assert naive["value"] == datetime(2026, 3, 1, 12, 0, 0, 654000, tzinfo=UTC)


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_a_value_bson_cannot_hold_is_refused_by_the_upsert_naming_field_and_type(
    batch_size: int, log_and_store: tuple[EventLog, Callable[[], MongoStore]]
) -> None:
    """The handler catches the refusal and writes something else: nothing is parked."""
    log, store = log_and_store
    append_tenant_events(log, [(None, name, "Refused", {}) for name in REFUSED])

    found = _documents(log, store(), batch_size=batch_size)

    assert sorted(found) == sorted(REFUSED)
    for name, (value, kind) in REFUSED.items():
        message = found[name].get("refused", "")
        field = f"kept.{next(iter(value))}"
        assert f"'doc_values' document with _id {name!r}" in message, message
        assert f"field {field!r}" in message and kind in message, message
        assert SECRET not in message and "7" not in message and "1.5" not in message, message


class Unread(Projection):
    name = "doc_unread"
    store = "docs"
    collections = ("doc_unread",)
    partitions = 1

    @on("bank", "Wrote")
    def wrote(self, event: Event[dict], tx: Any) -> None:
        name = event.aggregate_id
        value, _ = REFUSED[name]
        tx.upsert("doc_unread", {"_id": name, "kept": value, "secret": SECRET})


def test_an_uncaught_refusal_parks_its_event_at_once_without_the_value(
    log_and_store: tuple[EventLog, Callable[[], MongoStore]],
) -> None:
    log, store = log_and_store
    made = MongoStore(store().url)
    made.create_tables([Unread()])
    append_tenant_events(log, [(None, name, "Wrote", {}) for name in REFUSED])
    engine = ProjectionEngine(
        LogReader(log), [Unread()], {"docs": made}, max_attempts=5, retry_backoff=30
    )
    try:
        engine.catch_up(deadline=60)
        parked = {p.aggregate_id: p for p in made.parked("doc_unread")}
    finally:
        engine.close()
        made.close()
    assert sorted(parked) == sorted(REFUSED)
    for name, (_, kind) in REFUSED.items():
        entry = parked[name]
        assert entry.attempts == 1, entry.reason
        assert "refused for good, not retried" in entry.reason, entry.reason
        assert "UnstorableValueError" in entry.reason and kind in entry.reason, entry.reason
        assert SECRET not in entry.reason and SECRET not in (entry.detail or "")


def _typed(value: Any) -> Any:
    """``value`` with the type of everything in it (``1 == 1.0``, ``(1,) != [1]``)."""
    if isinstance(value, dict):
        return (type(value).__name__, {key: _typed(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_typed(item) for item in value])
    return (type(value).__name__, repr(value))


def test_get_answers_in_the_batch_what_a_later_batch_reads(
    log_and_store: tuple[EventLog, Callable[[], MongoStore]],
) -> None:
    _, store = log_and_store
    made = store()
    collections = {"doc_values": "doc_values"}
    with made.transaction() as session:
        tx = DocumentTx(made.database, session, collections)
        for name, value in VALUES.items():
            tx.upsert("doc_values", {"_id": name, "value": value()})
        in_batch = {name: tx.get("doc_values", name) for name in VALUES}
        tx.flush()
    with made.transaction() as session:
        tx = DocumentTx(made.database, session, collections)
        later = {name: tx.get("doc_values", name) for name in VALUES}
    assert {n: _typed(in_batch[n]) for n in VALUES} == {n: _typed(later[n]) for n in VALUES}
    with made.transaction() as session:
        tx = DocumentTx(made.database, session, collections)
        with pytest.raises(UnstorableValueError) as refused:
            tx.upsert("doc_values", {"_id": "d", "amount": Decimal("1.5")})
        assert tx.get("doc_values", "d") is None  # the refused write is not kept
    assert "field 'amount'" in str(refused.value) and "1.5" not in str(refused.value)
    with made.transaction() as session:
        tx = DocumentTx(made.database, session, collections)
        with pytest.raises(UnstorableValueError) as in_id:  # the _id unshown: it holds it
            tx.upsert("doc_values", {"_id": {"a": Decimal("1.5")}})
        with pytest.raises(UnstorableValueError) as a_uuid:
            tx.upsert("doc_values", {"_id": "u", "at": [uuid.UUID(int=15)]})
    assert str(in_id.value) == (
        "'doc_values' document, in its _id ('_id.a'): InvalidDocument: BSON cannot encode a "
        "value of type decimal.Decimal"
    )
    assert str(a_uuid.value).startswith("'doc_values' document with _id 'u': field 'at.0': ")
    assert "UUID" in str(a_uuid.value) and "000f" not in str(a_uuid.value)


TIME = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=ZONE)
# name: (the _id written, another key the server finds it by)
KEYS: dict[str, tuple[Any, Any]] = {
    "tuple and list": ((1, "a"), [1, "a"]),
    "IntEnum and int": (Level.HIGH, 3),
    "Int64 and int": (Int64(2**40), 2**40),
    "str subclass and str": (Label("k"), "k"),
    "datetime and its millisecond in UTC": (TIME, TIME.replace(microsecond=123000)),
    "compound with a tuple": ({"a": (1, 2)}, {"a": [1, 2]}),
}


def test_a_write_is_found_in_its_batch_by_any_key_a_later_batch_finds_it_by(
    log_and_store: tuple[EventLog, Callable[[], MongoStore]],
) -> None:
    _, store = log_and_store
    made = store()
    collections = {"doc_values": "doc_values"}
    in_batch, later = {}, {}
    for name, (written, other) in KEYS.items():
        with made.transaction() as session:
            tx = DocumentTx(made.database, session, collections)
            tx.upsert("doc_values", {"_id": written, "name": name})
            in_batch[name] = tx.get("doc_values", other)
            tx.flush()
        with made.transaction() as session:
            tx = DocumentTx(made.database, session, collections)
            later[name] = tx.get("doc_values", other)
            tx.delete("doc_values", other)
            assert tx.get("doc_values", written) is None, name  # deleted, in the batch
            tx.flush()
    assert {n: _typed(d) for n, d in in_batch.items()} == {n: _typed(d) for n, d in later.items()}
    assert all(later[name]["name"] == name for name in KEYS)
    assert made.database["doc_values"].count_documents({}) == 0
