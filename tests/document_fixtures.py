"""A document projection for the MongoDB store tests (importable by worker subprocesses
through config). Kept apart from tests/projection_fixtures.py, whose projections are loaded
whole by tests that configure no MongoDB store."""

from __future__ import annotations

import os
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from projections.api import Event, Projection, on
from tests.projection_fixtures import slow_down


class DocTotals(Projection):
    """:class:`Totals` as MongoDB documents (store ``docs``): running totals per account,
    out-of-order events counted as violations; ``tags`` in a payload makes an unstorable
    document (a set), which MongoDB's driver refuses."""

    name = "doc_totals"
    store = "docs"
    collections = ("doc_totals",)
    key_tags = {"doc_totals": "account:{_id}"}

    @on("bank", "Deposited")
    def deposited(self, event: Event[dict], tx: Any) -> None:
        payload = event.payload
        slow_down()
        if os.environ.get("READMODEL_TEST_FAIL_ON") == event.aggregate_id and (
            payload["seq"] >= int(os.environ.get("READMODEL_TEST_FAIL_FROM_SEQ", "0"))
        ):
            raise RuntimeError(f"refusing {event.aggregate_id}")
        doc = tx.get("doc_totals", event.aggregate_id) or {
            "_id": event.aggregate_id,
            "events": 0,
            "total": 0,
            "last_seq": 0,
            "violations": 0,
        }
        doc["violations"] += 0 if payload["seq"] == doc["last_seq"] + 1 else 1
        doc["events"] += 1
        doc["total"] += payload["amount"]
        doc["last_seq"] = payload["seq"]
        if "tags" in payload:
            doc["tags"] = set(payload["tags"])
        if payload.get("dollar"):
            doc = {"$bad": 1, **doc}  # a field name MongoDB refuses in a replacement
        if payload.get("taken"):
            doc["code"] = "taken"  # see refuse_taken_codes
        tx.upsert("doc_totals", doc)


class DocLastDeposit(Projection):
    """Two collections, replay-safe (applying an event again changes nothing): the latest
    deposit per account, and one document per deposit."""

    name = "doc_last_deposit"
    store = "docs"
    collections = ("doc_last_deposit", "doc_deposits")
    replay_safe = True

    @on("bank", "Deposited")
    def deposited(self, event: Event[dict], tx: Any) -> None:
        payload = event.payload
        tx.upsert(
            "doc_last_deposit",
            {"_id": event.aggregate_id, "amount": payload["amount"], "seq": payload["seq"]},
        )
        tx.upsert(
            "doc_deposits",
            {"_id": event.position, "account": event.aggregate_id, "amount": payload["amount"]},
        )


def refuse_taken_codes(database: Database[Any], name: str) -> None:
    """A unique index on ``code`` in collection ``name`` and a document holding the code
    ``taken``: a deposit with ``"taken": True`` (:class:`DocTotals`
    then writes that code) is refused by the server when its batch is written, and only
    then: the test server takes anything else a batch's upserts let through."""
    database[name].create_index([("code", ASCENDING)], unique=True, sparse=True)
    holder = {"_id": "~taken", "events": 0, "total": 0, "last_seq": 0, "violations": 0}
    database[name].insert_one({**holder, "code": "taken"})
