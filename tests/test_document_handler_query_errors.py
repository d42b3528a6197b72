"""A document projection's handler whose query the server refuses (an unknown operator, an
unknown aggregation stage: ``OperationFailure`` with a code, not a write error), on its own
database handle or through the Tx's ``find``, fails its event: retried
``engine.max_attempts`` times, then parked with the error and its code, the rest of the
lane applied once each, in order. A write conflict a handler meets is still the store's
passing trouble: retried without counting against the event, never parked. A rebuild stops
at such an event, or skips it with ``--skip-errors``.

Before: the error went up as the store's (``StoreError: ...: apply failed``, a replay's
``replay failed``), the event was never parked and its lane stalled on it for good."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import AutoReconnect, OperationFailure
from structlog.testing import capture_logs

from outbox.log import EventLog
from projections.api import Event, Projection, on
from projections.document_generations import collections_at, generation_of
from projections.document_replay import DocumentReplayer
from projections.document_write_errors import the_stores
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.replay_types import ReplayError, ReplayOptions
from tests.projection_fixtures import log_events

PLANTED = "planted-secret@example.com"


class Visits(Projection):
    """Counts each person's visits, keeping the positions applied; a ``Probed`` event runs
    the query its payload names, then counts like a visit."""

    name = "doc_visits"
    store = "docs"
    collections = ("doc_visits",)
    partitions = 1
    database: ClassVar[Database[dict[str, Any]] | None] = None
    conflicts: ClassVar[int] = 0
    """How many more ``Probed`` events meet a write conflict on the handler's own client."""

    @on("crm", "Visited")
    def visited(self, event: Event[dict], tx: Any) -> None:
        found = tx.get("doc_visits", event.aggregate_id) or {"_id": event.aggregate_id, "at": []}
        found["at"].append(event.position)
        tx.upsert("doc_visits", found)

    @on("crm", "Probed")
    def probed(self, event: Event[dict], tx: Any) -> None:
        assert self.database is not None
        how = event.payload["how"]
        if how == "own_find":
            list(self.database["people"].find({"email": {"$bogus": PLANTED}}))
        elif how == "own_top_find":
            self.database["people"].find_one({"$bogus": PLANTED})
        elif how == "own_aggregate":
            list(self.database["people"].aggregate([{"$bogus": {"email": PLANTED}}]))
        elif how == "tx_find":
            tx.find("doc_visits", at={"$bogus": PLANTED})
        elif how == "conflict" and Visits.conflicts > 0:
            Visits.conflicts -= 1
            _write_conflict(self.database)
        self.visited(event, tx)


def _write_conflict(database: Database[dict[str, Any]]) -> None:
    """Raise the server's write conflict (code 112, ``TransientTransactionError``): two
    transactions of the handler's own client writing one document."""
    client = database.client
    with client.start_session() as first, client.start_session() as second:
        first.start_transaction()
        second.start_transaction()
        try:
            database["hot"].update_one({"_id": 1}, {"$inc": {"n": 1}}, session=first)
            database["hot"].update_one({"_id": 1}, {"$inc": {"n": 1}}, session=second)
            raise AssertionError("the server reported no write conflict")  # parked: fails
        finally:
            for session in (first, second):
                if session.in_transaction:
                    session.abort_transaction()


@pytest.fixture
def own_database(mongo_database: Callable[[], str]) -> Iterator[Database[dict[str, Any]]]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_database())
    database = client.get_default_database()
    database["people"].insert_one({"_id": "p1", "email": PLANTED})
    database["hot"].insert_one({"_id": 1, "n": 0})
    Visits.database = database
    yield database
    Visits.database = None
    Visits.conflicts = 0
    client.close()


def _run(
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
    how: str,
    *,
    batch_size: int,
    max_attempts: int,
) -> tuple[list[Any], dict[str, list[int]], dict[tuple[str, int], int], list[Any], list[Any]]:
    """Log p0, p1 (probing ``how``), p0, p2, p1's later visit and p2 again in one lane and
    catch up; returns the parked events, each document's positions, the checkpoints, the
    failures still recorded and the captured log lines."""
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    store.create_tables([Visits()])
    events = [
        ("p0", "Visited", {}),
        ("p1", "Probed", {"how": how}),
        ("p0", "Visited", {}),
        ("p2", "Visited", {}),
        ("p1", "Visited", {}),
        ("p2", "Visited", {}),
    ]
    log_events(log, events, source="crm", aggregate_type="person")
    engine = ProjectionEngine(
        LogReader(log),
        [Visits()],
        {"docs": store},
        batch_size=batch_size,
        max_attempts=max_attempts,
        retry_backoff=0,
    )
    try:
        with capture_logs() as logs:
            engine.catch_up(deadline=60)
        parked = store.parked(Visits.name)
        documents = {d["_id"]: d["at"] for d in store.database["doc_visits"].find()}
        checkpoints = store.checkpoints(Visits.name)
        failures = store.failing(Visits.name)
    finally:
        engine.close()
        store.close()
        log.close()
    return parked, documents, checkpoints, failures, logs


@pytest.mark.parametrize("batch_size", [1, 50])
@pytest.mark.parametrize(
    ("how", "told"),
    [
        ("own_find", "(code 2, BadValue)"),
        ("own_top_find", "(code 2, BadValue)"),
        ("own_aggregate", "(code 40324"),
        ("tx_find", "(code 2, BadValue)"),
    ],
)
def test_a_handlers_refused_query_parks_its_event_and_the_lane_goes_on(
    how: str,
    told: str,
    batch_size: int,
    own_database: Database[dict[str, Any]],
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
) -> None:
    parked, documents, checkpoints, _, logs = _run(
        pg_database, mongo_database, how, batch_size=batch_size, max_attempts=2
    )
    entry, held = parked  # p1's later visit is held behind it
    assert (entry.aggregate_id, entry.position, entry.attempts) == ("p1", 2, 2)
    assert (held.aggregate_id, held.position) == ("p1", 5)
    assert entry.reason.startswith("handler failed 2 times: OperationFailure("), entry.reason
    assert told in entry.reason, entry.reason
    assert "OperationFailure: " in (entry.detail or ""), entry.detail
    # Every other event applied once, in order.
    assert documents == {"p0": [1, 3], "p2": [4, 6]}
    assert checkpoints == {("crm", 0): 6}
    assert [line["position"] for line in logs if line.get("event") == "event parked"] == [2]
    for text in (entry.reason, entry.detail or "", repr(logs)):
        assert PLANTED not in text, text


@pytest.mark.parametrize("batch_size", [1, 50])
def test_a_write_conflict_in_a_handler_is_retried_not_counted_nor_parked(
    batch_size: int,
    own_database: Database[dict[str, Any]],
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
) -> None:
    Visits.conflicts = 3
    parked, documents, checkpoints, failures, _ = _run(
        pg_database, mongo_database, "conflict", batch_size=batch_size, max_attempts=1
    )
    assert Visits.conflicts == 0  # met them all, then applied
    assert parked == [] and failures == []
    assert documents == {"p0": [1, 3], "p1": [2, 5], "p2": [4, 6]}
    assert checkpoints == {("crm", 0): 6}


def test_which_mongodb_errors_in_a_handler_are_the_stores(
    own_database: Database[dict[str, Any]],
) -> None:
    """The server's own refusals (taken from it) are the handler's; a server stepping down,
    shutting down or interrupting, told by code or label (no failpoint on the test server
    to make it say so), and refused credentials are the store's."""
    refused = []
    for query in ({"$bogus": 1}, {"email": {"$bogus": 1}}):
        with pytest.raises(OperationFailure) as raised:
            own_database["people"].find_one(query)
        refused.append(raised.value)
    with pytest.raises(OperationFailure) as raised:
        list(own_database["people"].aggregate([{"$bogus": {}}]))
    refused.append(raised.value)
    assert [e.code for e in refused] == [2, 2, 40324]
    assert not any(the_stores(e) for e in refused)
    for code in (10107, 189, 11600, 11601, 11602, 91, 262, 112, 13, 18):
        assert the_stores(OperationFailure("passing", code)), code
    for label in ("RetryableWriteError", "TransientTransactionError"):
        labelled = OperationFailure("labelled", 2, {"errorLabels": [label]})
        assert the_stores(labelled), label
    assert the_stores(AutoReconnect("gone"))
    assert not the_stores(OperationFailure("bad value", 2))


def test_a_replay_stops_at_a_handlers_refused_query_or_skips_it(
    own_database: Database[dict[str, Any]],
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
) -> None:
    """A rebuild meets the refused query as the event's failure: a strict replay stops at
    it naming the event, ``--skip-errors`` skips it and rebuilds the rest."""
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    store.create_tables([Visits()])
    events = [
        ("p0", "Visited", {}),
        ("p1", "Probed", {"how": "tx_find"}),
        ("p2", "Visited", {}),
        ("p1", "Probed", {"how": "own_aggregate"}),
        ("p0", "Visited", {}),
    ]
    log_events(log, events, source="crm", aggregate_type="person")

    def replayer() -> DocumentReplayer:
        return DocumentReplayer(LogReader(log), Visits(), store, batch_size=10, retire_after=0.0)

    try:
        with pytest.raises(ReplayError) as stopped:
            replayer().run(ReplayOptions())
        summary = replayer().run(ReplayOptions(skip_errors=True))
        generation = generation_of(store.database, Visits.name)
        (name,) = collections_at(Visits(), generation).values()
        documents = {d["_id"]: d["at"] for d in store.database[name].find()}
    finally:
        store.close()
        log.close()
    message = str(stopped.value)
    assert "replay stopped at crm:2 (Probed of person:p1)" in message, message
    assert "OperationFailure" in message and "(code 2, BadValue)" in message, message
    assert [s.position for s in summary.skipped] == [2, 4]
    assert "(code 2, BadValue)" in summary.skipped[0].error, summary.skipped[0].error
    assert documents == {"p0": [1, 5], "p2": [3]}
    assert PLANTED not in message + repr(summary.skipped)
