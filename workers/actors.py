"""Dramatiq actors: ``apply_lane`` brings one (projection, source, partition) lane up to date.

Messages carry no events, only "this lane has work up to position N": the
consumer reads the lane's events from the log starting at its own checkpoint.
A lost message therefore costs latency (the sweeper re-sends it), a duplicate
or stale one is a cheap no-op, and reordering cannot reorder events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import dramatiq
import structlog

from outbox.errors import ReadmodelError
from outbox.log import AppendResult
from outbox.source_relay import RelayHooks
from projections.api import Projection
from projections.engine import RetryLater
from projections.store import Lane
from workers.broker_log import broker_address, describe_broker_error
from workers.runtime import Runtime

logger = structlog.get_logger("readmodel.worker")

APPLY_ACTOR = "readmodel_apply_lane"


class Actors:
    """The actors of one process, bound to its broker and runtime."""

    def __init__(self, broker: dramatiq.Broker, runtime: Runtime) -> None:
        self.broker = broker
        self.runtime = runtime
        self.queue = runtime.settings.broker.queue
        self.apply_lane = dramatiq.actor(
            self._apply_lane,
            actor_name=APPLY_ACTOR,
            queue_name=self.queue,
            broker=broker,
            max_retries=1_000_000,
            min_backoff=100,
            max_backoff=30_000,
            # A lane runs as long as it has work (a backlog, or the targets later messages
            # hand to its thread): Dramatiq's TimeLimit would raise into it anywhere, in a
            # handler or the store's driver, and roll back the batch in hand. Each event's
            # handler is bounded instead (engine.handler_timeout).
            time_limit=float("inf"),
        )

    def _apply_lane(
        self,
        projection: str,
        source: str,
        partition: int,
        target: int,
        checkpoint: int | None = None,
    ) -> None:
        lane = Lane(projection, source, partition)
        known = self.runtime.engine.projections.get(projection)
        if known is None or not known.reads(source) or not 0 <= partition < known.partitions:
            # Another deployment's lane (a projection renamed, removed or not loaded here):
            # retrying cannot help; the sweeper of the processes that have it sends it again.
            logger.warning("message for a lane this process does not have; dropped", lane=str(lane))
            return
        try:
            self.runtime.engine.process_trigger(lane, target, checkpoint)
        except RetryLater as retry:
            raise dramatiq.Retry(str(retry), delay=int(retry.delay * 1000)) from None
        except ReadmodelError as exc:
            logger.warning("apply failed; will retry", lane=str(lane), error=str(exc))
            raise

    def send_lane(self, lane: Lane, target: int) -> None:
        self.apply_lane.send(lane.projection, lane.source, lane.partition, target)

    def send_lanes(
        self, lanes: Iterable[tuple[Lane, int]], read: Mapping[Lane, int] | None = None
    ) -> int:
        """One message per lane; on Redis all of them in one round trip. ``read``: the
        checkpoints the sweep read (a worker that brought a lane further learns from it that
        a replay moved the checkpoint back)."""
        read = read or {}
        message = self.apply_lane.message
        messages = [
            message(lane.projection, lane.source, lane.partition, target)
            if lane not in read
            else message(lane.projection, lane.source, lane.partition, target, read[lane])
            for lane, target in lanes
        ]
        enqueue_many = getattr(self.broker, "enqueue_many", None)
        if enqueue_many is None:
            for one in messages:
                self.broker.enqueue(one)
            return len(messages)
        if messages:
            enqueue_many(messages)
        return len(messages)


class Publisher(RelayHooks):
    """Relay hook: after each appended batch, tell the lanes it brought work that there is."""

    def __init__(self, actors: Actors) -> None:
        self.actors = actors

    def after_append(self, source: str, result: AppendResult) -> None:
        """Message only the lanes with an event of the batch their projection subscribes to
        in their partition. The others have nothing to apply: the sweeper moves their
        checkpoints to the head (a lane's read reaches past unread types anyway)."""
        if not result.appended:
            return
        engine = self.actors.runtime.engine
        lanes = [
            (lane, result.head)
            for projection in engine.subscribers(source)
            for lane in _woken(engine.lanes(projection, source), projection, source, result)
        ]
        try:
            self.actors.send_lanes(lanes)
        except Exception as exc:  # the sweeper re-sends whatever this loses
            logger.warning(
                "publishing to the broker failed",
                source=source,
                broker=broker_address(self.actors.runtime.settings.broker.url),
                error=describe_broker_error(exc),
            )


def _woken(
    lanes: Iterable[Lane], projection: Projection, source: str, result: AppendResult
) -> list[Lane]:
    """Those of ``lanes`` (the projection's lanes of ``source``) whose partition holds an
    appended event of a type ``projection`` subscribes to."""
    read = {t for t, _ in result.type_hashes if projection.subscribes(source, t)}
    partitions = {h % projection.partitions for t, h in result.type_hashes if t in read}
    return [lane for lane in lanes if lane.partition in partitions]


def sweep(actors: Actors) -> int:
    """Redo cache invalidations still journaled after ``cache.redo_after``, then send a
    message for every lane whose checkpoint trails the log head; returns how many."""
    redo_after = actors.runtime.settings.cache.redo_after.total_seconds()
    try:
        actors.runtime.engine.redo_invalidations(older_than=redo_after)
    except ReadmodelError as exc:
        logger.warning("redoing cache invalidations failed", error=str(exc))
    lagging = actors.runtime.engine.lagging()
    read = {lane: checkpoint for lane, checkpoint, _ in lagging}
    return actors.send_lanes(((lane, head) for lane, _, head in lagging), read)
