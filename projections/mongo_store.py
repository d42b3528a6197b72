"""Read models as MongoDB documents: a batch's writes, its checkpoint, its parked events and
its cache journal commit in one multi-document transaction (a replica set, a single-node one
will do).

An apply transaction reads its lane's checkpoint, applies the events, and writes the
documents and the new checkpoint at the end, on condition that the checkpoint has not moved:
two processes applying one lane at once conflict there, MongoDB aborts one of them (a
transient transaction error), and that one is retried and finds the work done. Writing at the
end keeps a batch's locks short: the transaction of a process killed while holding them
blocks those documents until the server drops it (``transactionLifetimeLimitSeconds``, 60 s
by default); conflicts are retried for ``conflict_wait`` seconds, longer than that.

The store keeps its own collections beside the read models: ``rm_checkpoints``,
``rm_blocked_aggregates``, ``rm_parked_events``, ``rm_handler_failures``,
``rm_invalidations``, ``rm_counters`` (parked events' numbers) and ``rm_generations``
(which collections hold each projection's model: a rebuild writes a new generation, see
:mod:`projections.document_generations`; a batch reads it inside its transaction, so a
rebuild's swap, which moves it and the lanes' checkpoints, conflicts with the batches
that started before it). Aggregates' holds (``rm_blocked_aggregates``) are written and read
by :mod:`projections.document_holds`.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, MongoClient, ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.errors import (
    BulkWriteError,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    WriteError,
)

from outbox.db import redact_dsn
from outbox.envelope import Envelope
from outbox.errors import StoreError
from outbox.mongo import describe_mongo_error as _describe
from outbox.mongo import mongo_client, mongo_database
from projections.api import Projection
from projections.document_collections import create_collection_indexes, create_collections
from projections.document_generations import (
    GENERATIONS,
    check_recorded,
    collections_at,
    generation_of,
)
from projections.document_holds import (
    BLOCKED,
    PARKED,
    blocked_aggregates,
    hold_aggregate,
    hold_filter,
    merge_blocked,
)
from projections.mongo_tx import DocumentTx, RefusedDocument, handler_error, refused_for_good
from projections.store import (
    AggregateKey,
    BatchResult,
    EventLoader,
    HandlerFailed,
    Invalidation,
    Lane,
    ParkedEntry,
    ParkedEvent,
    Store,
    WritesRefused,
    add_cache_tags,
    held_entry,
    hold_of,
    tenant_holds_of,
    untenant_entries,
)

CHECKPOINTS = "rm_checkpoints"
FAILURES = "rm_handler_failures"
INVALIDATIONS = "rm_invalidations"
COUNTERS = "rm_counters"


class _Moved(Exception):
    """The lane's checkpoint moved (or was created) since the transaction read it."""


class MongoStore(Store):
    """A store in one MongoDB database (the URL's path names it)."""

    def __init__(
        self, url: str, *, client: MongoClient[Any] | None = None, conflict_wait: float = 90.0
    ) -> None:
        self.url = url
        self.conflict_wait = conflict_wait
        self.client = client or mongo_client(url)
        self.database = self.client.get_database(mongo_database(url))

    @property
    def display_url(self) -> str:
        return redact_dsn(self.url)

    def close(self) -> None:
        self.client.close()

    def refused_for_good(self, error: BaseException) -> bool:
        return refused_for_good(error)

    def create_tables(self, projections: Sequence[Projection]) -> None:
        """Create the projections' collections and the store's own, with their indexes."""
        for projection in projections:
            if projection.tables or not projection.collections:
                raise StoreError(
                    f"projection {projection.name!r} keeps tables, not collections: its store "
                    f"{projection.store!r} is a MongoDB store, which holds documents"
                )
        try:
            for projection in projections:
                check_recorded(self.database, projection, starting=True)
            wanted = [
                c
                for p in projections
                for c in collections_at(p, generation_of(self.database, p.name)).values()
            ]
            own = (CHECKPOINTS, BLOCKED, PARKED, FAILURES, INVALIDATIONS, COUNTERS, GENERATIONS)
            create_collections(self.database, (*own, *wanted))
            self.database[PARKED].create_index(
                [("projection", ASCENDING), ("source", ASCENDING), ("position", ASCENDING)],
                unique=True,
            )
            self.database[PARKED].create_index([("number", ASCENDING)], unique=True)
            # ``failing``: a projection's failures, of one source and a span of positions.
            # Writes and deletes go by ``_id``.
            self.database[FAILURES].create_index(
                [("projection", ASCENDING), ("source", ASCENDING), ("position", ASCENDING)]
            )
            for projection in projections:
                physical = collections_at(projection, generation_of(self.database, projection.name))
                create_collection_indexes(self.database, projection, physical)
        except PyMongoError as exc:
            raise StoreError(f"cannot create collections: {_describe(exc)}") from exc

    # -- transactions --------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[ClientSession]:
        """A session in a multi-document transaction, committed on exit (aborted on error)."""
        with self.client.start_session() as session:
            session.start_transaction()
            try:
                yield session
            except BaseException:
                if session.in_transaction:
                    try:
                        session.abort_transaction()
                    except PyMongoError:
                        pass  # the server aborts it anyway when the session goes
                raise
            for attempt in range(3):
                try:
                    session.commit_transaction()
                    return
                except PyMongoError as exc:
                    if attempt == 2 or not exc.has_error_label("UnknownTransactionCommitResult"):
                        raise

    def _retrying(self, what: str, work: Callable[[], Any]) -> Any:
        """Run ``work`` (one transaction), again after a write conflict with another
        process's transaction, a moved checkpoint or a lost connection, for up to
        ``conflict_wait`` seconds."""
        deadline = time.monotonic() + self.conflict_wait
        pause = 0.001
        while True:
            try:
                return work()
            except _Moved:
                if time.monotonic() > deadline:
                    raise StoreError(f"{what}: the lane's checkpoint kept moving") from None
            except PyMongoError as exc:
                if not _transient(exc) and not _is_connection_error(exc):
                    raise StoreError(f"{what}: {_describe(exc)}") from exc
                if time.monotonic() > deadline:
                    raise StoreError(f"{what}: {_describe(exc)}") from exc
            time.sleep(random.uniform(0, pause))
            pause = min(pause * 2, 0.5)

    def _tx(self, session: ClientSession, projection: Projection) -> DocumentTx:
        """The handlers' transaction on the projection's current generation, read in it."""
        generation = generation_of(self.database, projection.name, session)
        return DocumentTx(
            self.database, session, collections_at(projection, generation), projection=projection
        )

    # -- checkpoints ---------------------------------------------------------------

    def lock_lane(self, session: ClientSession, lane: Lane) -> int:
        """Write the lane's checkpoint in ``session``'s transaction (any other transaction
        writing it conflicts until this one ends); returns its position."""
        found = self.database[CHECKPOINTS].find_one_and_update(
            {"_id": lane_id(lane)},
            {"$inc": {"writes": 1}, "$setOnInsert": _new_checkpoint(lane)},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        return int(found["position"])

    def checkpoint(self, lane: Lane) -> int:
        try:
            found = self.database[CHECKPOINTS].find_one({"_id": lane_id(lane)})
        except PyMongoError as exc:
            raise StoreError(f"cannot read {CHECKPOINTS}: {_describe(exc)}") from exc
        return 0 if found is None else int(found["position"])

    def checkpoints(self, projection: str) -> dict[tuple[str, int], int]:
        try:
            found = list(self.database[CHECKPOINTS].find({"projection": projection}))
        except PyMongoError as exc:
            raise StoreError(f"cannot read {CHECKPOINTS}: {_describe(exc)}") from exc
        return {(d["source"], int(d["partition"])): int(d["position"]) for d in found}

    # -- applying ------------------------------------------------------------------

    def apply_batch(
        self,
        projection: Projection,
        lane: Lane,
        target: int | None,
        load: EventLoader,
        limit: int,
    ) -> BatchResult:
        if target is None:
            raise StoreError("apply_batch needs a target: this store does not hold the log")
        return self._retrying(
            f"{lane.projection}: apply failed",
            lambda: self._apply_batch(projection, lane, target, load, limit),
        )

    def _apply_batch(
        self, projection: Projection, lane: Lane, target: int, load: EventLoader, limit: int
    ) -> BatchResult:
        with self.transaction() as session:
            found = self.database[CHECKPOINTS].find_one({"_id": lane_id(lane)}, session=session)
            if found is None:
                session.abort_transaction()
                self._create_checkpoint(lane)
                raise _Moved
            position = int(found["position"])
            if position >= target:
                return BatchResult(0, 0, position, noop=True, target=target)
            events = load(position, target, limit)
            upto = int((events[-1].position if len(events) >= limit else target) or target)
            held = self._blocked(session, lane)
            tenanted = any(key.tenant for key in held)
            tx = self._tx(session, projection)
            tags = tx.invalidated if self.journal_invalidations else None
            parked: list[ParkedEntry] = []
            try:
                if events:
                    projection.prefetch(events, tx)  # type: ignore[arg-type]
                applied = 0
                for event in events:
                    hold = hold_of(held, event) if held else None
                    if hold is None and tenanted and (tenants := tenant_holds_of(held, event)):
                        hold = merge_blocked(self.database, session, lane, held, tenants)
                        parked = untenant_entries(parked, hold[0])
                    if hold is not None:
                        parked.append(held_entry(lane, event, hold[1]))
                        continue
                    _handle(projection, event, tx, tags)
                    applied += 1
                tx.flush()
            except REFUSED_WRITES as exc:
                if _transient(exc):
                    raise
                if len(events) == 1:
                    raise HandlerFailed(
                        events[0], handler_error(exc), traceback.format_exc()
                    ) from exc
                raise WritesRefused(events[-1].position or 0, exc) from exc
            if parked:
                self.park(session, lane, parked)
            self._set_checkpoint(session, lane, upto, expected=position)
            invalidation = self.journal(session, projection.name, tags)
        return BatchResult(applied, len(parked), upto, invalidation=invalidation, target=target)

    def _create_checkpoint(self, lane: Lane) -> None:
        try:
            self.database[CHECKPOINTS].update_one(
                {"_id": lane_id(lane)}, {"$setOnInsert": _new_checkpoint(lane)}, upsert=True
            )
        except DuplicateKeyError:
            pass  # another process created it

    def _set_checkpoint(
        self, session: ClientSession, lane: Lane, position: int, *, expected: int
    ) -> None:
        moved = self.database[CHECKPOINTS].update_one(
            {"_id": lane_id(lane), "position": expected},
            {"$set": {"position": position, "updated_at": datetime.now(UTC)}},
            session=session,
        )
        if moved.matched_count != 1:
            raise _Moved

    # -- parking -------------------------------------------------------------------

    def _blocked(self, session: ClientSession, lane: Lane) -> dict[AggregateKey, dict[str, Any]]:
        return blocked_aggregates(self.database, session, lane.projection, lane.source)

    def park(self, session: ClientSession, lane: Lane, entries: Sequence[ParkedEntry]) -> None:
        """Park entries (an event: an envelope or a replay's skipped event) not parked
        already, numbered from ``rm_counters``."""
        existing = {
            d["position"]
            for d in self.database[PARKED].find(
                {
                    "projection": lane.projection,
                    "source": lane.source,
                    "position": {"$in": [entry.event.position for entry in entries]},
                },
                {"position": 1},
                session=session,
            )
        }
        new = [entry for entry in entries if entry.event.position not in existing]
        if not new:
            return
        counter = self.database[COUNTERS].find_one_and_update(
            {"_id": "parked"},
            {"$inc": {"n": len(new)}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        first = int(counter["n"]) - len(new) + 1
        now = datetime.now(UTC)
        self.database[PARKED].insert_many(
            [
                {
                    "number": first + i,
                    "projection": lane.projection,
                    "source": event.source,
                    "position": event.position,
                    "event_id": event.event_id,
                    "aggregate_type": event.aggregate_type,
                    "aggregate_id": event.aggregate_id,
                    "tenant": tenant,
                    "event_type": event.event_type,
                    "reason": reason,
                    "detail": detail,
                    "attempts": attempts,
                    "status": "parked",
                    "parked_at": now,
                    "resolved_at": None,
                }
                for i, (event, reason, detail, attempts, tenant) in enumerate(new)
            ],
            session=session,
        )

    def record_failure(self, lane: Lane, event: Envelope, error: str) -> int:
        def work() -> int:
            found = self.database[FAILURES].find_one_and_update(
                {"_id": _failure_id(lane, event.position or 0)},
                {
                    "$inc": {"attempts": 1},
                    "$set": {
                        "projection": lane.projection,
                        "source": lane.source,
                        "position": event.position,
                        "last_error": error,
                        "updated_at": datetime.now(UTC),
                    },
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            return int(found["attempts"])

        return int(self._retrying(f"{lane.projection}: cannot record a failure", work))

    def block(self, lane: Lane, event: Envelope, reason: str, detail: str, attempts: int) -> bool:
        def work() -> bool:
            with self.transaction() as session:
                failure = {"_id": _failure_id(lane, event.position or 0)}
                if self.lock_lane(session, lane) >= (event.position or 0):
                    self.database[FAILURES].delete_one(failure, session=session)
                    return False
                hold_aggregate(self.database, session, lane, event, reason, detail, attempts)
                return True

        return bool(self._retrying(f"{lane.projection}: cannot park an event", work))

    def failing(
        self,
        projection: str,
        source: str | None = None,
        after: int | None = None,
        upto: int | None = None,
    ) -> list[dict[str, Any]]:
        """Events whose handler failed and that are not parked yet, by position:
        ``source``, ``position``, ``attempts``, ``last_error``, ``updated_at``."""
        query: dict[str, Any] = {"projection": projection}
        if source is not None:
            query["source"] = source
        span = {"$gt": after} if after is not None else {}
        if upto is not None:
            span["$lte"] = upto
        if span:
            query["position"] = span
        try:
            return list(self.database[FAILURES].find(query, {"_id": 0}).sort("position", 1))
        except PyMongoError as exc:
            raise StoreError(f"cannot read {FAILURES}: {_describe(exc)}") from exc

    def parked(
        self, projection: str | None = None, status: str | None = "parked"
    ) -> list[ParkedEvent]:
        query: dict[str, Any] = {}
        if projection is not None:
            query["projection"] = projection
        if status is not None:
            query["status"] = status
        try:
            found = list(self.database[PARKED].find(query).sort("number", ASCENDING))
        except PyMongoError as exc:
            raise StoreError(f"cannot read {PARKED}: {_describe(exc)}") from exc
        return [_parked_event(d) for d in found]

    def retry_parked(
        self,
        projection: Projection,
        lane: Lane,
        aggregate: AggregateKey,
        load: Callable[[list[int]], Sequence[Envelope]],
    ) -> int:
        try:
            return int(
                self._retrying(
                    f"{lane.projection}: retry failed",
                    lambda: self._retry_parked(projection, lane, aggregate, load),
                )
            )
        except HandlerFailed as failed:
            self._record_failed_retry(lane, aggregate, failed)
            raise

    def _retry_parked(
        self,
        projection: Projection,
        lane: Lane,
        aggregate: AggregateKey,
        load: Callable[[list[int]], Sequence[Envelope]],
    ) -> int:
        where = _aggregate_filter(lane, aggregate) | {"status": "parked"}
        with self.transaction() as session:
            self.lock_lane(session, lane)
            positions = [
                int(d["position"])
                for d in self.database[PARKED]
                .find(where, {"position": 1}, session=session)
                .sort("position", ASCENDING)
            ]
            events = list(load(positions)) if positions else []
            tx = self._tx(session, projection)
            tags = tx.invalidated if self.journal_invalidations else None
            for event in events:
                try:  # written event by event: a refused write is the event's own failure
                    _handle(projection, event, tx, tags)
                    tx.flush()
                except REFUSED_WRITES as exc:
                    if _transient(exc):
                        raise
                    raise HandlerFailed(event, handler_error(exc), traceback.format_exc()) from exc
            self.journal(session, projection.name, tags)
            self.database[PARKED].update_many(
                where,
                {"$set": {"status": "retried", "resolved_at": datetime.now(UTC)}},
                session=session,
            )
            self._release(session, lane, aggregate, positions)
            return len(events)

    def _record_failed_retry(
        self, lane: Lane, aggregate: AggregateKey, failed: HandlerFailed
    ) -> None:
        event = failed.event
        position = event.position or 0
        reason = f"handler failed again on retry: {failed.error!r}"
        here = _aggregate_filter(lane, aggregate) | {"status": "parked"}

        def work() -> None:
            with self.transaction() as session:
                self.database[PARKED].update_one(
                    here | {"position": position},
                    {"$set": {"reason": reason, "detail": failed.detail}, "$inc": {"attempts": 1}},
                    session=session,
                )
                self.database[PARKED].update_many(
                    here | {"position": {"$gt": position}},
                    {
                        "$set": {
                            "reason": "held: an earlier event of this aggregate is parked "
                            f"({lane.source}:{position})"
                        }
                    },
                    session=session,
                )
                self.database[BLOCKED].update_one(
                    hold_filter(lane, aggregate),
                    {
                        "$set": {
                            "since_position": position,
                            "reason": reason,
                            "detail": failed.detail,
                        }
                    },
                    session=session,
                )

        self._retrying(f"{lane.projection}: cannot record a failed retry", work)

    def skip_parked(self, entry_id: int) -> ParkedEvent | None:
        def work() -> bool:
            with self.transaction() as session:
                found = self.database[PARKED].find_one_and_update(
                    {"number": entry_id, "status": "parked"},
                    {"$set": {"status": "skipped", "resolved_at": datetime.now(UTC)}},
                    session=session,
                )
                if found is None:
                    return False
                lane = Lane(found["projection"], found["source"], -1)
                aggregate = _parked_event(found).aggregate
                remaining = self.database[PARKED].count_documents(
                    _aggregate_filter(lane, aggregate) | {"status": "parked"}, session=session
                )
                if remaining == 0:
                    self._release(session, lane, aggregate, [int(found["position"])])
                return True

        if not self._retrying("cannot skip a parked event", work):
            return None
        found = self.database[PARKED].find_one({"number": entry_id})
        return None if found is None else _parked_event(found)

    def _release(
        self, session: ClientSession, lane: Lane, aggregate: AggregateKey, positions: list[int]
    ) -> None:
        self.database[BLOCKED].delete_many(hold_filter(lane, aggregate), session=session)
        self.database[FAILURES].delete_many(
            {"_id": {"$in": [_failure_id(lane, p) for p in positions]}}, session=session
        )

    # -- cache invalidations -------------------------------------------------------

    def journal(
        self, session: ClientSession | None, projection: str, tags: set[str] | None
    ) -> Invalidation | None:
        """Journal an invalidation of ``tags`` (in ``session``'s transaction), so that it is
        redone if the process dies before the cache hears of it. The id is the time in
        milliseconds and 20 random bits: lanes never contend on a counter for it."""
        if not tags:
            return None
        ordered = tuple(sorted(tags))
        while True:
            journal_id = int(time.time() * 1000) << 20 | random.getrandbits(20)
            try:
                self.database[INVALIDATIONS].insert_one(
                    {
                        "_id": journal_id,
                        "projection": projection,
                        "tags": list(ordered),
                        "created_at": datetime.now(UTC),
                    },
                    session=session,
                )
                return Invalidation(journal_id, projection, ordered)
            except DuplicateKeyError:
                if session is not None:
                    raise
                continue

    def journal_invalidation(self, projection: str, tags: Sequence[str]) -> Invalidation | None:
        if not self.journal_invalidations:
            return None
        try:
            return self.journal(None, projection, set(tags))
        except PyMongoError as exc:
            raise StoreError(f"cannot write {INVALIDATIONS}: {_describe(exc)}") from exc

    def pending_invalidations(
        self, older_than: float = 0.0, limit: int = 1000
    ) -> list[Invalidation]:
        query: dict[str, Any] = {}
        if older_than > 0:
            query["created_at"] = {"$lte": datetime.now(UTC) - timedelta(seconds=older_than)}
        try:
            found = list(self.database[INVALIDATIONS].find(query).sort("_id", 1).limit(limit))
        except PyMongoError as exc:
            raise StoreError(f"cannot read {INVALIDATIONS}: {_describe(exc)}") from exc
        return [Invalidation(int(d["_id"]), d["projection"], tuple(d["tags"])) for d in found]

    def forget_invalidations(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        try:
            self.database[INVALIDATIONS].delete_many({"_id": {"$in": list(ids)}})
        except PyMongoError as exc:
            raise StoreError(f"cannot delete {INVALIDATIONS}: {_describe(exc)}") from exc


# Writes the server or the driver refuses for what they hold (a duplicate on a unique
# index, a document too large, a value BSON cannot hold, a field name it refuses): the same
# writes fail again, so one of the batch's events is poison.
REFUSED_WRITES = (BulkWriteError, WriteError, RefusedDocument)


def _handle(projection: Projection, event: Envelope, tx: DocumentTx, tags: set[str] | None) -> None:
    tx.event = event
    try:
        if projection.handle(event, tx) and tags is not None:  # type: ignore[arg-type]
            add_cache_tags(projection, event, tags)
    except (*REFUSED_WRITES, PyMongoError):
        raise
    except Exception as exc:
        raise HandlerFailed(event, exc, traceback.format_exc()) from exc


def _new_checkpoint(lane: Lane) -> dict[str, Any]:
    return {
        "projection": lane.projection,
        "source": lane.source,
        "partition": lane.partition,
        "position": 0,
    }


def lane_id(lane: Lane) -> str:
    return f"{lane.projection}\x1f{lane.source}\x1f{lane.partition}"


def _failure_id(lane: Lane, position: int) -> str:
    return f"{lane.projection}\x1f{lane.source}\x1f{position}"


def _aggregate_filter(lane: Lane, aggregate: AggregateKey) -> dict[str, Any]:
    """The parked events under the hold of ``aggregate`` (without ``tenant``: parked before
    holds had tenants, under a hold naming none)."""
    return {
        "projection": lane.projection,
        "source": lane.source,
        "tenant": aggregate.tenant if aggregate.tenant else {"$in": ["", None]},
        "aggregate_type": aggregate.aggregate_type,
        "aggregate_id": aggregate.aggregate_id,
    }


def _parked_event(document: dict[str, Any]) -> ParkedEvent:
    return ParkedEvent(
        id=int(document["number"]),
        projection=document["projection"],
        source=document["source"],
        position=int(document["position"]),
        event_id=document["event_id"],
        aggregate_type=document["aggregate_type"],
        aggregate_id=document["aggregate_id"],
        event_type=document["event_type"],
        reason=document["reason"],
        detail=document.get("detail"),
        attempts=int(document.get("attempts", 0)),
        status=document["status"],
        parked_at=document["parked_at"],
        resolved_at=document.get("resolved_at"),
        tenant=document.get("tenant") or "",
    )


def retryable(exc: BaseException) -> bool:
    """A write conflict or a lost connection: the transaction may be run again."""
    return isinstance(exc, PyMongoError) and (_transient(exc) or _is_connection_error(exc))


def _transient(exc: BaseException) -> bool:
    """A write conflict with another transaction (retried), not a refusal of the data."""
    if not isinstance(exc, PyMongoError):
        return False
    if exc.has_error_label("TransientTransactionError"):
        return True
    if isinstance(exc, BulkWriteError):
        return any(error.get("code") == 112 for error in exc.details.get("writeErrors", []))
    return isinstance(exc, OperationFailure) and exc.code == 112


def _is_connection_error(exc: PyMongoError) -> bool:
    from pymongo.errors import AutoReconnect, ConnectionFailure

    return isinstance(exc, AutoReconnect | ConnectionFailure)
