"""What :class:`projections.engine.ProjectionEngine` does when a handler fails: the events
before the failing one applied first (an earlier event failing on its own met first), the
failure counted, then the event parked or retried later."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog

from outbox.envelope import Envelope
from outbox.errors import ReadmodelError, StoreError
from projections.api import Projection
from projections.failures import parked_at_once
from projections.store import BatchResult, HandlerFailed, Lane, Store, WritesRefused
from projections.store_names import store_field

if TYPE_CHECKING:
    from projections.engine import EngineHooks

logger = structlog.get_logger("readmodel.projections")


class RetryLater(ReadmodelError):
    """A handler failed; it is retried after ``delay`` seconds (the event is not parked yet)."""

    def __init__(
        self, lane: Lane, event: Envelope, attempts: int, delay: float, applied: int = 0
    ) -> None:
        super().__init__(
            f"{lane.projection}: {event.event_type} at {event.source}:{event.position} failed "
            f"(attempt {attempts}); retrying in {delay:.2f}s"
        )
        self.lane = lane
        self.event = event
        self.attempts = attempts
        self.delay = delay
        self.applied = applied


class LaneFailures:
    """The engine's handling of a lane's failing event (a mixin of
    :class:`projections.engine.ProjectionEngine`)."""

    batch_size: int
    max_attempts: int
    retry_backoff: float
    hooks: EngineHooks
    _reached: dict[Lane, int]

    def _apply(
        self, projection: Projection, store: Store, lane: Lane, target: int | None, limit: int
    ) -> BatchResult:
        raise NotImplementedError

    def _failed(
        self,
        projection: Projection,
        store: Store,
        lane: Lane,
        failure: HandlerFailed,
        settled: set[int],
    ) -> int:
        """Count the failure; keep the progress made before the failing event; then park it
        after ``max_attempts`` (at once when no retry can change it: a value its store
        refused for good, a payload its model rejects, a row it cannot place in a tenant;
        :func:`projections.failures.parked_at_once`), else raise :class:`RetryLater`. Returns events
        applied; adds the position of the event it parked (an earlier one, when that one
        fails on its own) or found applied by a rebuild to ``settled``."""
        event = failure.event
        # The events before it first: once its aggregate is blocked they would be held too.
        # An earlier event failing on its own comes first (in a loop, not nested: each
        # failure's traceback its own). The events applied before it are counted too.
        applied = 0
        while True:
            before, earlier = self._apply_before(projection, store, lane, event)
            applied += before
            if earlier is None:
                break
            not_parked_again(lane, earlier, settled)  # met before the failing one
            failure, event = earlier, earlier.event
        attempts = store.record_failure(lane, event, repr(failure.error))
        at_once = parked_at_once(store, failure)
        if attempts >= self.max_attempts or at_once is not None:
            settled.add(event.position or 0)
            reason = at_once or f"handler failed {attempts} times: {failure.error!r}"
            if not store.block(lane, event, reason, failure.detail, attempts):
                logger.info(
                    "failed event applied by a rebuild meanwhile; not parked",
                    projection=lane.projection,
                    source=lane.source,
                    position=event.position,
                )
                return applied
            logger.error(
                "event parked",
                projection=lane.projection,
                source=lane.source,
                position=event.position,
                aggregate=f"{event.aggregate_type}:{event.aggregate_id}",
                tenant=event.tenant,
                error=repr(failure.error),
                **store_field(store),
            )
            return applied
        delay = self.retry_backoff * (2 ** (attempts - 1))
        raise RetryLater(lane, event, attempts, delay, applied)

    def _apply_before(
        self, projection: Projection, store: Store, lane: Lane, event: Envelope
    ) -> tuple[int, HandlerFailed | None]:
        """Apply the lane's events before ``event``; returns how many, and the failure of
        an earlier event that fails (or whose writes are refused) on its own, if one does
        (the events before that one applied and counted)."""
        before = (event.position or 1) - 1
        applied = 0
        limit = self.batch_size
        while True:
            started = time.perf_counter()
            try:
                result = self._apply(projection, store, lane, before, limit)
            except WritesRefused:
                limit = 1  # one by one: a refused write is then its event's HandlerFailed
                continue
            except HandlerFailed as earlier:
                return applied, earlier
            if not result.noop:  # a committed batch, as process's (the metrics count them)
                self.hooks.after_batch(lane, result, time.perf_counter() - started)
                self._reached[lane] = max(result.checkpoint, self._reached.get(lane, -1))
            applied += result.applied
            if result.noop or result.checkpoint >= before:
                return applied, None


def not_parked_again(lane: Lane, failure: HandlerFailed, settled: set[int]) -> None:
    """:class:`StoreError` if ``failure``'s event was parked (``settled``) meanwhile: its hold
    does not hold it, and going on would park it again forever."""
    position = failure.event.position or 0
    if position in settled:
        raise StoreError(
            f"{lane.projection}: {lane.source}:{position} failed again after it "
            f"was parked: the hold of its aggregate does not hold it"
        ) from failure
