"""Parked events of a MongoDB store (``rm_parked_events``), numbered from ``rm_counters``.

A handler failure is counted per event (``rm_handler_failures``); after the retries the
event's aggregate is held (:mod:`projections.document_holds`), and the event and every later
one of the aggregate are parked until ``readmodel parked retry`` or ``skip`` releases them.
:class:`DocumentParking` is mixed into :class:`projections.mongo_store.MongoStore`.

A document rebuild's swap settles the projection's parked events:
:mod:`projections.document_settle`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import PyMongoError

from outbox.db_errors import hidden_traceback
from outbox.envelope import Envelope
from outbox.errors import CommitInterrupted, CommitUncertain, NotParked, StoreError
from outbox.mongo_connection import describe_mongo_error as _describe
from projections.api import Projection
from projections.document_holds import (
    BLOCKED,
    PARKED,
    blocked_aggregates,
    hold_aggregate,
    hold_filter,
)
from projections.document_swap_guard import DeadSwapWatch
from projections.document_write_errors import REFUSED_WRITES, handler_error, transient
from projections.mongo_tx import DocumentTx, handle
from projections.store import (
    AggregateKey,
    HandlerFailed,
    Invalidation,
    Lane,
    ParkedEntry,
    ParkedEvent,
)

if TYPE_CHECKING:
    pass

FAILURES = "rm_handler_failures"
COUNTERS = "rm_counters"


class DocumentParking:
    """The parking half of a MongoDB store; needs its ``database``, ``transaction``,
    ``_retrying``, ``_tx``, ``lock_lane`` and ``journal``."""

    database: Database[Any]
    journal_invalidations: bool

    if TYPE_CHECKING:

        def transaction(self) -> AbstractContextManager[ClientSession]: ...

        def _retrying(
            self, what: str, work: Callable[[], Any], conflicted: Callable[[], None] | None = None
        ) -> Any: ...

        def _tx(
            self, session: ClientSession, projection: Projection, lane: Lane | None = None
        ) -> DocumentTx: ...

        def lock_lane(self, session: ClientSession, lane: Lane) -> int: ...

        def journal(
            self, session: ClientSession | None, projection: str, tags: set[str] | None
        ) -> Invalidation | None: ...

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

        return bool(
            self._retrying(f"{lane.projection}: cannot park an event", work, self._watch(lane))
        )

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
        entry_id: int | None = None,
    ) -> int:
        committing: list[int] = []  # per attempt that got to its commit: events applied

        def work() -> int:
            return self._retry_parked(projection, lane, aggregate, load, committing, entry_id)

        try:
            applied = int(
                self._retrying(f"{lane.projection}: retry failed", work, self._watch(lane))
            )
        except HandlerFailed as failed:
            self._record_failed_retry(lane, aggregate, failed)
            raise
        except KeyboardInterrupt as exc:
            if committing:  # Ctrl-C at (or after) an attempt's commit: done or not, unknown
                raise CommitInterrupted(f"{lane.projection}: retry") from exc
            raise
        except StoreError as exc:
            if committing:  # an attempt's commit whose answer never came may have been done
                raise CommitUncertain(
                    f"{exc}; the connection was lost at the commit of an attempt, which may "
                    "or may not have been done"
                ) from exc
            raise
        # An attempt after a commit whose answer was lost finds the events applied by it.
        return applied or (committing[0] if committing else 0)

    def _retry_parked(
        self,
        projection: Projection,
        lane: Lane,
        aggregate: AggregateKey,
        load: Callable[[list[int]], Sequence[Envelope]],
        committing: list[int],
        entry_id: int | None,
    ) -> int:
        where = _aggregate_filter(lane, aggregate) | {"status": "parked"}
        with self.transaction() as session:
            self.lock_lane(session, lane)
            if entry_id is not None:
                # Read in the transaction's snapshot: a skip committed after it makes the
                # update of the entry below conflict, and the transaction runs again.
                entry = self.database[PARKED].find_one(
                    {"number": entry_id}, {"status": 1}, session=session
                )
                status = None if entry is None else entry["status"]
                if status != "parked":
                    raise NotParked(f"e{entry_id} is not parked", status)
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
                    handle(projection, event, tx, tags)
                    tx.flush()
                except REFUSED_WRITES as exc:
                    if transient(exc):
                        raise
                    raise HandlerFailed(event, handler_error(exc), hidden_traceback(exc)) from exc
            self.journal(session, projection.name, tags)
            self.database[PARKED].update_many(
                where,
                {"$set": {"status": "retried", "resolved_at": datetime.now(UTC)}},
                session=session,
            )
            self._release(session, lane, aggregate, positions)
            committing.append(len(events))  # what fails from now on is the commit
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

        self._retrying(f"{lane.projection}: cannot record a failed retry", work, self._watch(lane))

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

        try:
            entry = self.database[PARKED].find_one({"number": entry_id}, {"projection": 1})
        except PyMongoError as exc:
            raise StoreError(f"cannot read {PARKED}: {_describe(exc)}") from exc
        watch = None if entry is None else DeadSwapWatch(self.database, entry["projection"])
        if not self._retrying(
            "cannot skip a parked event", work, None if watch is None else watch.conflicted
        ):
            return None
        found = self.database[PARKED].find_one({"number": entry_id})
        return None if found is None else _parked_event(found)

    def _watch(self, lane: Lane) -> Callable[[], None]:
        """Told of each write conflict: the lane's checkpoint (or the parked events) may be
        held by a replay killed in its swap (:mod:`projections.document_swap_guard`)."""
        return DeadSwapWatch(self.database, lane.projection).conflicted

    def _release(
        self, session: ClientSession, lane: Lane, aggregate: AggregateKey, positions: list[int]
    ) -> None:
        self.database[BLOCKED].delete_many(hold_filter(lane, aggregate), session=session)
        self.database[FAILURES].delete_many(
            {"_id": {"$in": [_failure_id(lane, p) for p in positions]}}, session=session
        )


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
