"""Read models as MongoDB documents: a batch's writes, its checkpoint, its parked events and
its cache journal commit in one multi-document transaction (a replica set, a single-node one
will do).

An apply transaction reads its lane's checkpoint, applies the events, and writes the
documents and the new checkpoint at the end (the checkpoint, unmoved, just before the
first document: at the end, or before a handler's ``find``), on condition that the
checkpoint has not moved: two processes applying one lane at once conflict there, MongoDB
aborts one of them (a transient transaction error), and that one is retried and finds the
work done. Writing at the end keeps a batch's locks short: the transaction of a process
killed while holding them blocks those documents until the server drops it
(``transactionLifetimeLimitSeconds``, 60 s by default); conflicts are retried for
``conflict_wait`` seconds, longer than that (a replay killed in its swap is ended sooner:
:mod:`projections.document_swap_guard`).

The store keeps its own collections beside the read models: ``rm_checkpoints``,
``rm_blocked_aggregates``, ``rm_parked_events``, ``rm_handler_failures``,
``rm_invalidations``, ``rm_counters`` (parked events' numbers) and ``rm_generations``
(which collections hold each projection's model: a rebuild writes a new generation, see
:mod:`projections.document_generations`; a batch reads it inside its transaction, so a
rebuild's swap, which moves it and the lanes' checkpoints, conflicts with the batches
that started before it). Aggregates' holds (``rm_blocked_aggregates``) are written and read
by :mod:`projections.document_holds`; parked events are written, listed, retried and skipped
by :mod:`projections.document_parked`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pymongo import ASCENDING, MongoClient, ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.errors import DuplicateKeyError, PyMongoError

from outbox.db import redact_dsn
from outbox.db_errors import hidden_traceback
from outbox.envelope import Envelope
from outbox.errors import StoreError, read_store_at
from outbox.mongo_connection import describe_mongo_error as _describe
from outbox.mongo_connection import mongo_client, mongo_database
from projections.api import Projection, UnstorableValueError
from projections.document_collections import create_collection_indexes, create_collections
from projections.document_generations import (
    GENERATIONS,
    check_recorded,
    collections_at,
    generation_of,
)
from projections.document_holds import BLOCKED, PARKED, merge_blocked
from projections.document_invalidations import INVALIDATIONS, DocumentInvalidations
from projections.document_parked import COUNTERS, FAILURES, DocumentParking
from projections.document_parked_bulk import DocumentBulkParking
from projections.document_swap_guard import DeadSwapWatch
from projections.document_write_errors import (
    REFUSED_WRITES,
    handler_error,
    refused_for_good,
    retryable,
    transient,
)
from projections.mongo_tx import DocumentTx, handle
from projections.store import (
    BatchResult,
    EventLoader,
    HandlerFailed,
    Lane,
    ParkedEntry,
    Store,
    WritesRefused,
    held_entry,
    hold_of,
    tenant_holds_of,
    unheld,
    untenant_entries,
)

CHECKPOINTS = "rm_checkpoints"


class _Moved(Exception):
    """The lane's checkpoint moved (or was created) since the transaction read it."""


class MongoStore(DocumentParking, DocumentBulkParking, DocumentInvalidations, Store):
    """A store in one MongoDB database (the URL's path names it)."""

    def __init__(
        self,
        url: str,
        *,
        client: MongoClient[Any] | None = None,
        conflict_wait: float = 90.0,
        label: str | None = None,
    ) -> None:
        self.url = url
        self.label = label
        """The store's name in messages (:meth:`config.Settings.store_label`)."""
        self.conflict_wait = conflict_wait
        self.client = client or mongo_client(url)
        self.database = self.client.get_database(mongo_database(url))

    @property
    def location(self) -> str:
        """Where the store is, as its lines name it: no user, password or query."""
        return redact_dsn(self.url, location=True)

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
            where = read_store_at(self.location, self.label)
            raise StoreError(f"cannot create collections in the {where}: {_describe(exc)}") from exc

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

    def _retrying(
        self, what: str, work: Callable[[], Any], conflicted: Callable[[], None] | None = None
    ) -> Any:
        """Run ``work`` (one transaction), again after a write conflict with another
        process's transaction (told to ``conflicted``), a moved checkpoint, a lost
        connection or a server's passing state (:func:`retryable`), for up to
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
                if not retryable(exc):
                    raise StoreError(f"{what}: {_describe(exc)}") from exc
                if time.monotonic() > deadline:
                    raise StoreError(f"{what}: {_describe(exc)}") from exc
                if conflicted is not None and transient(exc):
                    conflicted()
            time.sleep(random.uniform(0, pause))
            pause = min(pause * 2, 0.5)

    def _tx(
        self, session: ClientSession, projection: Projection, lane: Lane | None = None
    ) -> DocumentTx:
        """The handlers' transaction on the projection's current generation, read in it.
        With ``lane``, the lane's checkpoint is written before the first document is: a
        rebuild's swap, which writes it too, then either waits for this batch or makes its
        first write conflict (it is redone on the new generation). A batch never holds
        uncommitted writes in a generation the swap retired, which the drop of that
        generation would wait for (on the SecantusDB test server holding every other
        operation back)."""
        generation = generation_of(self.database, projection.name, session)
        claim = None if lane is None else partial(self._claim_lane, session, lane)
        return DocumentTx(
            self.database,
            session,
            collections_at(projection, generation),
            projection=projection,
            before_write=claim,
        )

    def _claim_lane(self, session: ClientSession, lane: Lane) -> None:
        """Write the lane's checkpoint in ``session``'s transaction (a write conflict when
        it moved since the transaction began); :meth:`_set_checkpoint` moves it later."""
        self.database[CHECKPOINTS].update_one(
            {"_id": lane_id(lane)}, {"$inc": {"writes": 1}}, session=session
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
            DeadSwapWatch(self.database, lane.projection).conflicted,
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
            tx = self._tx(session, projection, lane)
            tags = tx.invalidated if self.journal_invalidations else None
            parked: list[ParkedEntry] = []
            try:
                if events:
                    self._prefetch(projection, unheld(held, events), events, tx)
                applied = 0
                for event in events:
                    hold = hold_of(held, event) if held else None
                    if hold is None and tenanted and (tenants := tenant_holds_of(held, event)):
                        hold = merge_blocked(self.database, session, lane, held, tenants)
                        parked = untenant_entries(parked, hold[0])
                    if hold is not None:
                        parked.append(held_entry(lane, event, hold[1]))
                        continue
                    handle(projection, event, tx, tags)
                    applied += 1
                tx.flush()
            except REFUSED_WRITES as exc:
                if transient(exc):
                    raise
                if len(events) == 1:
                    # Only the Tx raises RefusedDocument, the one refusal for good here.
                    raise HandlerFailed(
                        events[0], handler_error(exc), hidden_traceback(exc), refused=True
                    ) from exc
                raise WritesRefused(events[-1].position or 0, handler_error(exc)) from exc
            if parked:
                self.park(session, lane, parked)
            self._set_checkpoint(session, lane, upto, expected=position)
            invalidation = self.journal(session, projection.name, tags)
        return BatchResult(applied, len(parked), upto, invalidation=invalidation, target=target)

    @staticmethod
    def _prefetch(
        projection: Projection,
        ready: Sequence[Envelope],
        events: Sequence[Envelope],
        tx: DocumentTx,
    ) -> None:
        """The projection's ``prefetch`` of the ``ready`` events of the batch of ``events``.
        A key the Tx refuses (:class:`UnstorableValueError`, before anything is sent) is the
        failure of the event whose key it is: a batch of one fails that event (refused for
        good); a larger one is applied again one event at a time to find it."""
        try:
            projection.prefetch(ready, tx)  # type: ignore[arg-type]
        except UnstorableValueError as exc:
            if len(events) == 1:
                raise HandlerFailed(events[0], exc, hidden_traceback(exc), refused=True) from exc
            raise WritesRefused(events[-1].position or 0, exc) from exc

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


def _new_checkpoint(lane: Lane) -> dict[str, Any]:
    return {
        "projection": lane.projection,
        "source": lane.source,
        "partition": lane.partition,
        "position": 0,
    }


def lane_id(lane: Lane) -> str:
    return f"{lane.projection}\x1f{lane.source}\x1f{lane.partition}"
