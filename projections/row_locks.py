"""Row locks of a PostgreSQL apply transaction, taken in one order so that lanes never deadlock.

A handler's ``tx.get`` locks the row's key (a transaction-scoped advisory lock on
:func:`projections.sql_tx.row_lock_key`) until its batch commits, so that read-modify-writes
of a row several lanes write (a per-customer total fed by per-order events) stay exact. A
batch prefetch (``Projection.prefetch``) locks its keys up front in one sorted order. A
handler without one reads rows one by one, in its own order: lane 0 holding row A and
wanting B while lane 1 holds B and wants A waited for each other until PostgreSQL's
deadlock check (``deadlock_timeout``, 1 s by default) aborted one, which was then retried.

An ``ordered`` :class:`RowLocks` waits only for keys after (by value) every key its
transaction holds; no wait-for cycle can form among such transactions (each waits for a key
greater than all it holds, so along a cycle the keys would grow back to the first). A key
before one it holds it takes only if free (``pg_try_advisory_xact_lock``); when another
transaction holds it, :class:`OutOfOrder` rolls the batch back at once, and
:func:`apply_in_order` applies it again taking every key the failed attempt met first, in
order, so each new attempt knows more keys.

Every transaction that locks rows runs so: a live batch (:mod:`projections.sql_store`), a
parked event's retry (``SqlStore.retry_parked``) and an in-place replay batch
(:mod:`projections.replay_in_place`); a rebuild's shadow tables take no row locks. Each
locks its lane's checkpoint row before any row lock (an in-place replay batch: every lane of
its source, in partition order), so none waits for a checkpoint while holding a row lock.
PostgreSQL's deadlock check remains the backstop (for an attempt past :data:`RESTARTS`,
which waits in any order, and for locks other than these); a transaction it aborts, or a
serialization failure, is retried by :func:`apply_in_order` too.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
import psycopg
import structlog
from psycopg.types.json import Json

from outbox.errors import StoreError

logger = structlog.get_logger("readmodel.projections")

_T = TypeVar("_T")

# Many hashes travel as one JSON list. Takes the locks in the list's order:
_LOCK_MANY = "SELECT count(pg_advisory_xact_lock(h::bigint)) FROM json_array_elements_text(%s) t(h)"
# Tries every one (none waits); true when all were free:
_TRY_MANY = (
    "SELECT coalesce(bool_and(pg_try_advisory_xact_lock(h::bigint)), true) "
    "FROM json_array_elements_text(%s) t(h)"
)
_LOCK_ONE = "SELECT pg_advisory_xact_lock(%s::bigint)"
_TRY_ONE = "SELECT pg_try_advisory_xact_lock(%s::bigint)"

DEADLOCK_RETRIES = 20
RESTARTS = 50
"""Attempts of a batch restarted by :class:`OutOfOrder` before one that waits in any order
(each restart learns at least one more key: only a handler reading ever new rows gets
there)."""


class OutOfOrder(Exception):
    """A row lock before one the transaction holds is another's: the batch rolls back and
    starts again, taking :attr:`locks` (every key it met) first."""

    def __init__(self, locks: frozenset[int]) -> None:
        super().__init__(f"a row lock before one held is taken by another ({len(locks)} keys)")
        self.locks = locks


class RowLocks:
    """The advisory row locks of one transaction (see the module's docstring)."""

    def __init__(self, *, ordered: bool = False, first: Iterable[int] = ()) -> None:
        self.ordered = ordered
        self.held: set[int] = set()
        self._first = frozenset(first)
        self.restart: OutOfOrder | None = None
        """Set once a lock was out of order: the batch must not commit (a handler may have
        caught the exception)."""

    def take(self, cursor: Callable[[], Any], hashes: Iterable[int]) -> None:
        """Hold ``hashes`` (with the keys to take first, on the first call), through
        ``cursor()`` (a psycopg cursor of the transaction's connection, in a pipeline too).
        Raises :class:`OutOfOrder` when a key before one held is another's."""
        if self.restart is not None:
            raise self.restart
        wanted = set(hashes)
        if self._first:
            wanted |= self._first
            self._first = frozenset()
        wanted -= self.held
        if not wanted:
            return
        top = max(self.held) if self.ordered and self.held else None
        tries = [] if top is None else sorted(h for h in wanted if h < top)
        waits = sorted(wanted) if top is None else sorted(h for h in wanted if h > top)
        self.held |= wanted
        if tries:
            found = cursor()
            found.execute(*_statement(_TRY_ONE, _TRY_MANY, tries))
            row = found.fetchone()
            if not (row and row[0]):
                self.restart = OutOfOrder(frozenset(self.held))
                raise self.restart
        if waits:
            cursor().execute(*_statement(_LOCK_ONE, _LOCK_MANY, waits))


def _statement(one: str, many: str, hashes: list[int]) -> tuple[str, tuple[Any]]:
    if len(hashes) == 1:
        return one, (hashes[0],)
    return many, (Json(hashes, dumps=orjson.dumps),)


def apply_in_order(lane: Any, attempt: Callable[[RowLocks], _T]) -> _T:
    """Run ``attempt`` (one apply transaction) with ordered row locks, again after an
    :class:`OutOfOrder` with the keys it met, and after a deadlock or a serialization
    failure (:class:`StoreError` caused by one; logged)."""
    first: frozenset[int] = frozenset()
    restarts = deadlocks = 0
    while True:
        try:
            return attempt(RowLocks(ordered=restarts < RESTARTS, first=first))
        except OutOfOrder as restart:
            restarts += 1
            first = restart.locks
            logger.debug(
                "batch restarted to take its row locks in order",
                projection=lane.projection,
                partition=lane.partition,
                keys=len(first),
            )
        except StoreError as exc:
            deadlocks += 1
            if not is_deadlock(exc.__cause__) or deadlocks == DEADLOCK_RETRIES:
                raise
            logger.warning(
                "batch rolled back by a deadlock or a serialization failure; retried",
                projection=lane.projection,
                source=lane.source,
                partition=lane.partition,
                attempt=deadlocks,
            )
            time.sleep(random.uniform(0, 0.005 * deadlocks))


def is_deadlock(exc: BaseException | None) -> bool:
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure)
