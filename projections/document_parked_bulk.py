"""Set-based parked-event work of a MongoDB store (``readmodel parked skip --projection``).

:class:`DocumentBulkParking` is mixed into :class:`projections.mongo_store.MongoStore`: many
entries are skipped in one transaction, a few commands for them all, and the holds left
with nothing parked are released as
:meth:`~projections.document_parked.DocumentParking.skip_parked` releases one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import PyMongoError

from outbox.errors import CommitInterrupted, CommitUncertain, StoreError
from outbox.mongo_connection import describe_mongo_error as _describe
from outbox.parking import PurgeProgress
from projections.document_holds import BLOCKED, PARKED, hold_filter, hold_key
from projections.document_parked import FAILURES, _failure_id
from projections.document_swap_guard import DeadSwapWatch
from projections.store import AggregateKey, Lane

CHUNK = 5000

_HOLD = ("projection", "source", "tenant", "aggregate_type", "aggregate_id")


class DocumentBulkParking:
    """The bulk half of a MongoDB store's parking; needs its ``database``, ``transaction``
    and ``_retrying``."""

    database: Database[Any]

    if TYPE_CHECKING:

        def transaction(self) -> AbstractContextManager[ClientSession]: ...

        def _retrying(
            self, what: str, work: Callable[[], Any], conflicted: Callable[[], None] | None = None
        ) -> Any: ...

    def skip_parked_many(self, entry_ids: Sequence[int]) -> int:
        ids = sorted(set(entry_ids))
        if not ids:
            return 0

        committing: list[int] = []  # per attempt that got to its commit: what it skipped

        def work() -> int:
            with self.transaction() as session:
                skipped = sum(
                    self._skip_chunk(session, ids[start : start + CHUNK])
                    for start in range(0, len(ids), CHUNK)
                )
                committing.append(skipped)  # what fails from now on is the commit
                return skipped

        try:
            first = self.database[PARKED].find_one({"number": ids[0]}, {"projection": 1})
        except PyMongoError as exc:
            raise StoreError(f"cannot skip parked events: {_describe(exc)}") from exc
        watch = None if first is None else DeadSwapWatch(self.database, first["projection"])
        try:
            skipped = int(
                self._retrying(
                    "cannot skip parked events", work, None if watch is None else watch.conflicted
                )
            )
        except KeyboardInterrupt as exc:
            if committing:  # Ctrl-C at (or after) an attempt's commit: done or not, unknown
                raise CommitInterrupted("cannot skip parked events") from exc
            raise
        except StoreError as exc:
            if committing:
                raise _uncertain(exc) from exc
            raise
        # An attempt after a commit whose answer was lost finds the events it skipped.
        return skipped or (committing[0] if committing else 0)

    def blocked_since(self, projection: str) -> dict[tuple[str, AggregateKey], int]:
        try:
            found = list(self.database[BLOCKED].find({"projection": projection}))
        except PyMongoError as exc:
            raise StoreError(f"cannot read {BLOCKED}: {_describe(exc)}") from exc
        return {(d["source"], hold_key(d)): int(d["since_position"]) for d in found}

    def purge_skipped(self, entry_ids: Sequence[int], progress: PurgeProgress | None = None) -> int:
        """Chunk by chunk, one transaction each (a commit holds a chunk's deletes, all or
        none): ``progress`` counts each chunk once committed; a chunk an error stopped at its
        commit is counted ``uncertain``."""
        progress = PurgeProgress() if progress is None else progress
        ids = sorted(set(entry_ids))
        before = progress.deleted
        for start in range(0, len(ids), CHUNK):
            self._purge_chunk(ids[start : start + CHUNK], progress)
        return progress.deleted - before

    def _purge_chunk(self, ids: list[int], progress: PurgeProgress) -> None:
        found = {"number": {"$in": ids}, "status": "skipped"}
        committing: list[int] = []  # per attempt that got to its commit: what it deleted

        def work() -> None:
            with self.transaction() as session:
                deleted = self.database[PARKED].delete_many(found, session=session)
                committing.append(deleted.deleted_count)

        try:
            self._retrying("cannot purge skipped parked events", work)
        except BaseException as exc:
            if not committing:
                raise
            # A commit whose answer never came may have deleted them.
            progress.uncertain += len(ids)
            if isinstance(exc, StoreError):
                raise _uncertain(exc) from exc
            raise
        # An attempt after a commit whose answer was lost finds the entries that commit
        # deleted gone: the first attempt that got to its commit tells what was there.
        progress.deleted += committing[0]
        progress.handled += len(ids)

    def _skip_chunk(self, session: ClientSession, ids: list[int]) -> int:
        parked = self.database[PARKED]
        where = {"number": {"$in": ids}, "status": "parked"}
        found = list(parked.find(where, session=session))
        if not found:
            return 0
        parked.update_many(
            where,
            {"$set": {"status": "skipped", "resolved_at": datetime.now(UTC)}},
            session=session,
        )
        holds = {_hold(d) for d in found}
        still = {
            _hold(d)
            for d in parked.find(
                {"projection": {"$in": sorted({h[0] for h in holds})}, "status": "parked"},
                dict.fromkeys(_HOLD, 1),
                session=session,
            )
        }
        released = holds - still
        if released:
            lanes = [(Lane(h[0], h[1], -1), AggregateKey(*h[2:])) for h in released]
            self.database[BLOCKED].delete_many(
                {"$or": [hold_filter(lane, key) for lane, key in lanes]}, session=session
            )
            self.database[FAILURES].delete_many(
                {
                    "_id": {
                        "$in": [
                            _failure_id(Lane(d["projection"], d["source"], -1), int(d["position"]))
                            for d in found
                            if _hold(d) in released
                        ]
                    }
                },
                session=session,
            )
        return len(found)


def _uncertain(exc: StoreError) -> CommitUncertain:
    """``exc`` (the last attempt's error) when an attempt got to its commit and no answer
    told it done. (A lost answer alone does not get here: pymongo sends the
    ``commitTransaction`` again itself, and the server answers that it is committed.)"""
    return CommitUncertain(
        f"{exc}; the connection was lost at the commit of an attempt, which may or may not "
        "have been done"
    )


def _hold(document: dict[str, Any]) -> tuple[str, ...]:
    """The hold a parked event is under (one naming no tenant may lack ``tenant``)."""
    return tuple(document.get(name) or "" for name in _HOLD)
