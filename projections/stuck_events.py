"""Events whose handler gets stuck on every attempt: counted, then parked.

A handler stuck where it cannot be interrupted makes its worker exit (``workers/
stuck_exit.py``) and its batch never commits, so the engine never counts the attempt: a
handler that blocks on every attempt would make every restarted worker exit again, for
ever, and its lane never move. :func:`counting` wraps the engine's ``on_stuck`` action so
that the stuck event's attempt is recorded first (``Store.record_failure``, its
``last_error`` starting with :data:`STUCK_ERROR`); :func:`park_stuck`, run as a worker
starts, parks each event stuck ``engine.max_attempts`` times and holds its aggregate, as a
handler failing that often would be: the rest of the lane flows, ``readmodel parked``
shows it, ``parked retry`` applies it once the handler is fixed.

Parking waits for the next start on purpose: the dying worker's stuck transaction may hold
the lane's lock, which parking takes. It may hold the whole store too (SQLite's one write
lock): an attempt not recorded within :data:`RECORD_WAIT` then goes to the store's journal
file (:mod:`projections.stuck_journal`), which :func:`park_stuck` counts first."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING

import structlog

from outbox.envelope import Envelope
from outbox.error_text import describe_error
from projections import stuck_journal
from projections.handler_timeout import OnStuck, StuckHandler
from projections.log_aside import log_aside
from projections.store import Lane, Store
from projections.store_names import naming, store_field
from projections.stuck_journal import Attempt

if TYPE_CHECKING:
    from projections.api import Projection
    from projections.engine import ProjectionEngine

logger = structlog.get_logger("readmodel.projections")

STUCK_ERROR = "HandlerStuck"
"""How the ``last_error`` of an attempt that got stuck begins."""


RECORD_WAIT = 5.0
"""Seconds the stuck attempt's recording may hold up the exit (a store that is locked, hung
or retrying: the attempt then goes to the store's journal, if it keeps one, or is not
counted)."""


def counting(on_stuck: OnStuck, store: Store, lane: Lane) -> OnStuck:
    """``on_stuck``, after recording the stuck event's attempt in ``store``, waiting for it
    at most :data:`RECORD_WAIT` seconds (one not recorded is journalled, or logged: the
    worker exits all the same, and soon)."""

    def stuck(handler: StuckHandler) -> None:
        event = handler.event
        if event is not None:
            attempts = _record(store, lane, event, handler.seconds)
            if attempts is not None:
                handler = replace(handler, attempts=attempts)
        on_stuck(handler)

    return stuck


def _record(store: Store, lane: Lane, event: Envelope, seconds: float) -> int | None:
    """The event's attempts with this stuck one counted; ``None`` when the store did not
    record it within :data:`RECORD_WAIT` (it may still, from a daemon thread, before the
    process ends: the attempt id in its error keeps the journal from counting it again)."""
    attempt = uuid.uuid4().hex
    error = (
        f"{STUCK_ERROR} [attempt {attempt}]: handler stuck {seconds:g}s past "
        "engine.handler_timeout, where it cannot be interrupted; the worker exited"
    )
    recorded: list[int] = []

    def record() -> None:
        try:
            recorded.append(store.record_failure(lane, event, error))
        except Exception as exc:
            log_aside(
                logger.warning,
                "the stuck handler's attempt could not be counted",
                projection=lane.projection,
                source=lane.source,
                position=event.position,
                error=describe_error(exc),
            )

    thread = threading.Thread(target=record, name="readmodel-stuck-attempt", daemon=True)
    thread.start()
    thread.join(RECORD_WAIT)
    if recorded:
        return recorded[0]
    journal = store.stuck_journal()
    where = dict(projection=lane.projection, source=lane.source, position=event.position)
    if journal is None:
        if thread.is_alive():
            log_aside(
                logger.warning,
                "the stuck handler's attempt was not counted in time; exiting without it",
                waited=RECORD_WAIT,
                **where,
            )
        return None
    try:
        stuck_journal.append(
            journal, Attempt(attempt, lane.projection, lane.source, event.position or 0, error)
        )
    except OSError as exc:
        log_aside(
            logger.error,
            "the stuck handler's attempt could not be counted nor journalled",
            journal=str(journal),
            error=describe_error(exc),
            **where,
        )
    else:
        log_aside(
            logger.warning,
            "the stuck handler's attempt was not counted in time; journalled, to be counted "
            "when a worker starts",
            journal=str(journal),
            **where,
        )
    return None


def park_stuck(engine: ProjectionEngine) -> int:
    """Park each event whose handler got stuck ``engine.max_attempts`` times (its aggregate
    held); returns how many. An event applied meanwhile (a rebuild swapped in) is not.
    Stuck attempts journalled by a worker that exited are counted first."""
    try:
        stuck_journal.replay(engine)
    except Exception as exc:  # the journal is kept: counted at a later start
        logger.error("counting the journalled stuck attempts failed", error=describe_error(exc))
    parked = 0
    for projection in engine.projections.values():
        store = engine.store_of(projection)
        with naming(store):
            parked += _park_stuck_of(engine, projection, store)
    return parked


def _park_stuck_of(engine: ProjectionEngine, projection: Projection, store: Store) -> int:
    """:func:`park_stuck` for one projection of ``store``."""
    parked = 0
    for failure in store.failing(projection.name):
        attempts = int(failure["attempts"])
        last_error = str(failure.get("last_error") or "")
        if attempts < engine.max_attempts or not last_error.startswith(STUCK_ERROR):
            continue
        found = engine.reader.at_positions(failure["source"], [int(failure["position"])])
        if not found:
            continue
        event = found[0]
        lane = engine.lane_of(projection, event)
        reason = (
            f"handler stuck {attempts} times past engine.handler_timeout and "
            "engine.stuck_exit_after (the worker exited each time)"
        )
        if store.block(lane, event, reason, last_error, attempts):
            parked += 1
            logger.error(
                "event parked",
                projection=projection.name,
                source=event.source,
                position=event.position,
                aggregate=f"{event.aggregate_type}:{event.aggregate_id}",
                tenant=event.tenant,
                error=reason,
                **store_field(store),
            )
    return parked
