"""The transactions of a document replay (:mod:`projections.document_replay`): run again
after write conflicts, each proving the replay's lease, applying events to a generation's
collections."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import structlog
from pymongo.client_session import ClientSession
from pymongo.errors import PyMongoError

from outbox.envelope import Envelope
from outbox.errors import StoreError
from outbox.mongo_connection import describe_mongo_error
from projections.api import Projection, UnstorableValueError
from projections.document_write_errors import handler_error, the_stores
from projections.mongo_store import REFUSED_WRITES, MongoStore, retryable
from projections.mongo_tx import DocumentTx
from projections.replay_base import ReplayerBase
from projections.replay_lock import prove_lease, proving
from projections.replay_policy import ErrorPolicy, HandlerError
from projections.replay_skipped import document_skipped

logger = structlog.get_logger("readmodel.replay")

_T = TypeVar("_T")

WAIT_TOLD_AFTER = 2.0
"""Seconds of write conflicts after which a replay says what it waits for."""


class _Refused(Exception):
    """A batch's writes were refused: apply its events again in smaller batches (a rebuild
    in halves, the swap and in place one by one) to find the one."""


class DocumentReplayTx(ReplayerBase):
    """What a document replay's transactions share."""

    projection: Projection
    store: MongoStore
    database: Any
    lease: float
    _policy: ErrorPolicy
    _owner: str | None
    _shadow: dict[str, str]
    _written: dict[str, set[Any]]

    def _reread_skips(self, session: ClientSession | None = None) -> None:
        """Read the events an operator skipped again (in ``session``'s transaction, if
        given), taking in those skipped since the last read
        (:mod:`projections.replay_skipped`)."""
        if self._skips is not None:
            self._skips.add(document_skipped(self.database, self.projection.name, session))

    @contextmanager
    def _mongo(self, what: str) -> Iterator[None]:
        try:
            yield
        except PyMongoError as exc:
            raise StoreError(
                f"{self.projection.name}: {what}: {describe_mongo_error(exc)}"
            ) from exc

    def _attempt(
        self,
        work: Callable[[ClientSession], _T],
        *,
        hand_back: Callable[[HandlerError], bool] | None = None,
    ) -> _T:
        """``work`` in one transaction, run again after a write conflict or a lost
        connection (for the store's ``conflict_wait``), and after a handler failure the
        policy lets pass (``skip_errors``: the event is then held), unless ``hand_back``
        says the caller takes that failure (raised to it, the transaction rolled back)."""
        started = time.monotonic()
        deadline = started + self.store.conflict_wait
        pause = 0.01
        told = False
        while True:
            mark = self._policy.mark()
            try:
                with proving(self._owner), self.store.transaction() as session:
                    return work(session)
            except HandlerError as failed:
                self._policy.undo(mark)
                if hand_back is not None and hand_back(failed):
                    raise
                self._policy.fail(failed)
                continue
            except PyMongoError as exc:
                self._policy.undo(mark)
                if not retryable(exc) or time.monotonic() > deadline:
                    raise
                if not told and time.monotonic() - started > WAIT_TOLD_AFTER:
                    told = True
                    logger.warning(
                        "the replay waits for transactions holding what it writes (live "
                        "batches still open, or a killed process's until the server ends it)",
                        projection=self.projection.name,
                        gives_up_after=self.store.conflict_wait,
                    )
            except BaseException:
                self._policy.undo(mark)
                raise
            time.sleep(random.uniform(0, pause))
            pause = min(pause * 2, 0.5)

    def _prove_lease(self, session: ClientSession, what: str = "it stopped") -> None:
        if self._owner is not None:
            prove_lease(self.database, self.projection.name, self._owner, session, what, self.lease)

    def _apply(
        self, session: ClientSession, events: Sequence[Envelope], collections: dict[str, str]
    ) -> int:
        """Apply ``events`` to ``collections`` in ``session``'s transaction; returns how
        many. A write refused for what it holds is the failure of the one event applied
        (:class:`HandlerError`), or :class:`_Refused` for the caller to narrow down."""
        written = self._written if collections is self._shadow else None
        tx = DocumentTx(self.database, session, collections, written, projection=self.projection)
        policy = self._policy
        # Skipping a failed event here, its handler's writes taken back in memory, spares
        # the transaction's rollback and the events before it applied again (a rebuild's
        # transaction is up to 100,000 events), as projections.replay_apply does for tables.
        # Not in place: the live collections' replay keeps the one way of old.
        undoable = written is not None and policy.skip_errors and not policy.in_place
        events, ready = policy.ready(events, undoable=undoable)
        handle = self.projection.handle
        applied = 0
        try:
            try:
                self.projection.prefetch(ready, tx)  # type: ignore[arg-type]
            except UnstorableValueError as exc:  # a key of an event's, refused before sending
                if len(ready) == 1:
                    raise HandlerError(ready[0], exc) from exc
                raise _Refused(repr(exc)) from exc
            for event in events:
                if undoable and policy.held and policy.holds(event):
                    continue
                tx.event = event
                if undoable:
                    tx.undoable()
                try:
                    handle(event, tx)  # type: ignore[arg-type]
                except REFUSED_WRITES:
                    raise
                except Exception as exc:
                    server = isinstance(exc, PyMongoError)
                    if server and the_stores(exc):
                        raise  # a write conflict, a lost connection: run again
                    failed = HandlerError(event, handler_error(exc))
                    # The server ends a transaction one of its commands failed in (a
                    # tx.find it refused): the attempt is run again without the event.
                    if server or not (undoable and tx.undo()):
                        raise failed from exc
                    policy.fail(failed)
                    continue
                applied += 1
            tx.settle()
            tx.flush()
        except REFUSED_WRITES as exc:
            if retryable(exc):
                raise
            if len(ready) == 1:
                raise HandlerError(ready[0], handler_error(exc)) from exc
            raise _Refused(repr(handler_error(exc))) from exc
        return applied


def every_failure(failed: HandlerError) -> bool:
    """``hand_back`` for a caller of ``_attempt`` that takes every handler failure itself
    (to apply the events before it first)."""
    return True
