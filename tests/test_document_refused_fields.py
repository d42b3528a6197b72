"""What the server refuses of a document at commit, the upsert refuses itself (a commit's
refusal fails the whole batch, which is then narrowed event by event): a top-level field name
starting with ``$`` (the server stores a nested one, and dotted names, as they are), and a
document past the largest the server holds (16 MiB, its ``maxBsonObjectSize``), with the
tenant field the upsert fills in. The refusal names the collection, the ``_id`` and the
field, or the size and the limit, never a value."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import bson
import pytest

from outbox.envelope import Envelope
from projections.api import Projection, UnstorableValueError
from projections.mongo_store import MongoStore
from projections.mongo_tx import DocumentTx

SECRET = "s3cr3t-v4lue"
LIMIT = 16 * 1024 * 1024
COLLECTIONS = {"doc_fields": "doc_fields"}


class Fields(Projection):
    name = "doc_fields"
    store = "docs"
    collections = ("doc_fields",)
    partitions = 1


class TenantFields(Projection):
    name = "doc_tenant_fields"
    store = "docs"
    collections = ("doc_fields",)
    partitions = 1
    tenant_column = "tenant"


@pytest.fixture
def store(mongo_database: Callable[[], str]) -> Iterator[MongoStore]:
    made = MongoStore(mongo_database())
    made.create_tables([Fields()])
    yield made
    made.close()


def test_a_top_level_dollar_field_is_refused_by_the_upsert_nested_ones_are_stored(
    store: MongoStore,
) -> None:
    kept = {"_id": "kept", "a": {"$b": 1}, "c": [{"$d": 2}], "e.f": 3, "g$": 4}
    with store.transaction() as session:
        tx = DocumentTx(store.database, session, COLLECTIONS)
        tx.upsert("doc_fields", {"_id": "old", "v": 1})
        tx.flush()
    with store.transaction() as session:
        tx = DocumentTx(store.database, session, COLLECTIONS)
        refused = []
        for document in (
            {"_id": "old", "v": 2, "$set": SECRET},  # a replacement, to the server
            {"$v": SECRET, "_id": "new"},  # first: the driver takes it for an operator
            {"_id": "new", "$": SECRET},
        ):
            with pytest.raises(UnstorableValueError) as error:
                tx.upsert("doc_fields", document)
            refused.append(str(error.value))
        tx.upsert("doc_fields", kept)
        in_batch = tx.get("doc_fields", "kept")
        assert tx.get("doc_fields", "old") == {"_id": "old", "v": 1}  # the refused not kept
        tx.flush()
    with store.transaction() as session:
        tx = DocumentTx(store.database, session, COLLECTIONS)
        later = tx.get("doc_fields", "kept")
        assert tx.get("doc_fields", "new") is None
    assert in_batch == later == kept
    assert refused[0] == (
        "'doc_fields' document with _id 'old': field '$set': a document's top-level field name "
        "cannot start with '$' (MongoDB refuses it in a replacement): rename it, or nest it in "
        "another field"
    )
    assert "field '$v'" in refused[1] and "field '$'" in refused[2]
    assert not any(SECRET in message for message in refused)


def _sized(key: str, size: int, **fields: Any) -> dict[str, Any]:
    """A document of ``key`` taking ``size`` bytes as BSON."""
    document = {"_id": key, **fields, "text": ""}
    document["text"] = SECRET[0] * (size - len(bson.encode(document)))
    assert len(bson.encode(document)) == size
    return document


def _envelope(tenant: str) -> Envelope:
    return Envelope(
        event_id=uuid.uuid4().hex,
        source="bank",
        tenant=tenant,
        aggregate_type="account",
        aggregate_id="x",
        event_type="Opened",
        payload={},
        position=1,
    )


def test_a_document_past_the_largest_the_server_holds_is_refused_by_the_upsert(
    store: MongoStore,
) -> None:
    tenant_field = len(bson.encode({"tenant": "acme"})) - 5  # the bytes the upsert adds
    with store.transaction() as session:
        tx = DocumentTx(store.database, session, COLLECTIONS)
        with pytest.raises(UnstorableValueError) as too_large:
            tx.upsert("doc_fields", _sized("big", LIMIT + 1))
        tx.upsert("doc_fields", _sized("largest", LIMIT))
        assert tx.get("doc_fields", "big") is None
        tx.flush()
    with store.transaction() as session:
        tx = DocumentTx(store.database, session, COLLECTIONS, projection=TenantFields())
        tx.event = _envelope("acme")
        with pytest.raises(UnstorableValueError) as with_tenant:
            tx.upsert("doc_fields", _sized("tenant big", LIMIT - tenant_field + 1))
        tx.upsert("doc_fields", _sized("tenant largest", LIMIT - tenant_field))
        tx.upsert("doc_fields", _sized("tenant given", LIMIT, tenant="acme"))
        tx.flush()
    sizes = {
        d["_id"]: len(bson.encode(d))
        for d in store.database["doc_fields"].find({}, sort=[("_id", 1)])
    }
    assert sizes == {"largest": LIMIT, "tenant given": LIMIT, "tenant largest": LIMIT}
    assert str(too_large.value) == (
        f"'doc_fields' document with _id 'big': the document is {LIMIT + 1} bytes as BSON, "
        f"past the {LIMIT} bytes a MongoDB document holds"
    )
    assert str(with_tenant.value) == (
        f"'doc_fields' document with _id 'tenant big': the document is {LIMIT + 1} bytes as "
        f"BSON, past the {LIMIT} bytes a MongoDB document holds"
    )
