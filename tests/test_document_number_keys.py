"""A number ``_id`` is one document to the server whatever its type (``1``, ``1.0``,
``Int64(1)``, ``Decimal128("1")``, and the numbers inside a compound ``_id``), so it is one in
a batch too: a get, an upsert, a delete or a prefetch by any of them answers in the batch what
a later batch reads. A key BSON cannot hold (a set) is refused by the call itself, naming the
collection and the type, never the value."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from bson import Decimal128, Int64

from projections.api import Projection, UnstorableValueError
from projections.mongo_store import MongoStore
from projections.mongo_tx import DocumentTx

SECRET = "s3cr3t-v4lue"
COLLECTIONS = {"doc_keys": "doc_keys"}


class Keys(Projection):
    name = "doc_keys"
    store = "docs"
    collections = ("doc_keys",)
    partitions = 1


@pytest.fixture
def store(mongo_database: Callable[[], str]) -> Iterator[MongoStore]:
    made = MongoStore(mongo_database())
    made.create_tables([Keys()])
    yield made
    made.close()


# name: (the _id written, other keys the server finds it by)
ALIKE: dict[str, tuple[Any, list[Any]]] = {
    "int": (1, [1.0, Int64(1), Decimal128("1"), Decimal128("1.00")]),
    "float": (2.5, [Decimal128("2.5"), Decimal128("2.50")]),
    "Int64": (Int64(2**40), [2**40, float(2**40), Decimal128(str(2**40))]),
    "Decimal128": (Decimal128("3"), [3, 3.0, Int64(3)]),
    "zero": (0, [-0.0, Decimal128("-0")]),
    "compound": (
        {"a": 4, "b": [5]},
        [{"a": 4.0, "b": [Decimal128("5")]}, {"a": Int64(4), "b": [5.0]}],
    ),
}


def test_a_number_id_is_found_in_its_batch_by_every_number_a_later_batch_finds_it_by(
    store: MongoStore,
) -> None:
    for name, (written, others) in ALIKE.items():
        with store.transaction() as session:
            tx = DocumentTx(store.database, session, COLLECTIONS)
            tx.upsert("doc_keys", {"_id": written, "name": name})
            in_batch = [tx.get("doc_keys", other) for other in others]
            tx.flush()
        with store.transaction() as session:
            tx = DocumentTx(store.database, session, COLLECTIONS)
            later = [tx.get("doc_keys", other) for other in others]
            tx.delete("doc_keys", others[-1])
            assert tx.get("doc_keys", written) is None, name  # deleted, in the batch
            tx.flush()
        assert [d and d["name"] for d in later] == [name] * len(others), name
        assert in_batch == later, name
        assert store.database["doc_keys"].count_documents({}) == 0, name


def test_writes_of_one_number_id_by_several_number_types_are_of_one_document(
    store: MongoStore,
) -> None:
    with store.transaction() as session:
        tx = DocumentTx(store.database, session, COLLECTIONS)
        tx.upsert("doc_keys", {"_id": 7, "v": "read by a float"})
        tx.upsert("doc_keys", {"_id": 8, "v": "deleted by a Decimal128"})
        tx.flush()
    with store.transaction() as session:
        tx = DocumentTx(store.database, session, COLLECTIONS)
        tx.prefetch("doc_keys", [7.0, Decimal128("8")])
        assert tx.get("doc_keys", 7.0) == {"_id": 7, "v": "read by a float"}
        tx.delete("doc_keys", Decimal128("8"))
        assert tx.get("doc_keys", 8) is None
        tx.upsert("doc_keys", {"_id": 1, "v": "int"})
        tx.upsert("doc_keys", {"_id": 1.0, "v": "float"})
        in_batch = tx.get("doc_keys", Int64(1))
        tx.flush()
    with store.transaction() as session:
        tx = DocumentTx(store.database, session, COLLECTIONS)
        later = tx.get("doc_keys", Int64(1))
        assert tx.get("doc_keys", 8) is None
    assert in_batch == later and later is not None and later["v"] == "float"
    assert store.database["doc_keys"].count_documents({}) == 2


# keys the server tells apart, though equal in Python or alike as numbers
APART = [1, True, "1", [1, 2], [1.0, 2]]


def test_keys_the_server_tells_apart_are_apart_in_the_batch(store: MongoStore) -> None:
    with store.transaction() as session:
        tx = DocumentTx(store.database, session, COLLECTIONS)
        for index, key in enumerate(APART):
            tx.upsert("doc_keys", {"_id": key, "i": index})
        in_batch = [tx.get("doc_keys", key) for key in APART]
        tx.flush()
    with store.transaction() as session:
        tx = DocumentTx(store.database, session, COLLECTIONS)
        later = [tx.get("doc_keys", key) for key in APART]
    assert [d and d["i"] for d in in_batch] == list(range(len(APART)))
    assert later == in_batch
    assert store.database["doc_keys"].count_documents({}) == len(APART)


def test_a_key_bson_cannot_hold_is_refused_by_the_call_naming_collection_and_type(
    store: MongoStore,
) -> None:
    calls: dict[str, Callable[[DocumentTx, Any], Any]] = {
        "a read's _id": lambda tx, key: tx.get("doc_keys", key),
        "a delete's _id": lambda tx, key: tx.delete("doc_keys", key),
        "a read's _id (prefetch)": lambda tx, key: tx.prefetch("doc_keys", ["k", key]),
    }
    keys: dict[str, tuple[Any, str, str]] = {  # name: (key, the field named, the type named)
        "set": ({SECRET}, "'_id'", "type set"),
        "Decimal": (Decimal("1.5"), "'_id'", "type decimal.Decimal"),
        "set in a compound _id": ({"a": 1, "b": {SECRET}}, "'_id.b'", "type set"),
    }
    messages = []
    with store.transaction() as session:
        tx = DocumentTx(store.database, session, COLLECTIONS)
        for what, call in calls.items():
            for kind, (key, field, named) in keys.items():
                with pytest.raises(UnstorableValueError) as refused:
                    call(tx, key)
                message = str(refused.value)
                assert message.startswith(f"'doc_keys': {what.split(' (')[0]} ({field})"), message
                assert named in message and SECRET not in message and "1.5" not in message, kind
                messages.append(message)
        tx.upsert("doc_keys", {"_id": "k", "v": 1})  # the transaction goes on
        tx.flush()
    assert messages[0] == (
        "'doc_keys': a read's _id ('_id') cannot be a key: InvalidDocument: BSON cannot encode "
        "a value of type set"
    )
    assert store.database["doc_keys"].count_documents({}) == 1


def test_a_find_by_a_value_bson_cannot_hold_is_refused_naming_the_field_and_type(
    store: MongoStore,
) -> None:
    with store.transaction() as session:
        tx = DocumentTx(store.database, session, COLLECTIONS)
        tx.upsert("doc_keys", {"_id": "k", "v": 1})
        for value, field in (({SECRET}, "'tags'"), ({"a": {SECRET}}, "'tags.a'")):
            with pytest.raises(UnstorableValueError) as refused:
                tx.find("doc_keys", tags=value)
            message = str(refused.value)
            assert message.startswith(f"'doc_keys': a find's filter ({field})"), message
            assert "type set" in message and SECRET not in message, message
        assert [d["_id"] for d in tx.find("doc_keys", v=1)] == ["k"]  # the batch goes on
