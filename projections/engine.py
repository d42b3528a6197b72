"""The projection engine: brings each lane (projection, source, partition) up to the log head.

A lane's events are always read from the log starting at the lane's own
checkpoint, so a message that was lost, duplicated or reordered by the broker
changes nothing but latency: messages only say "there is work up to here".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from outbox.envelope import Envelope, aggregate_hash
from outbox.errors import ReadmodelError
from projections import invalidations
from projections.api import Projection
from projections.cache import Cache
from projections.engine_failures import LaneFailures, RetryLater, not_parked_again
from projections.engine_parked import ParkedOperations
from projections.handler_timeout import OnStuck, TimeoutHooks, handler_limit
from projections.log_reader import LogReader
from projections.store import (
    BatchResult,
    HandlerFailed,
    Lane,
    Store,
    WritesRefused,
)
from projections.store_names import named, naming
from projections.stuck_events import counting

logger = structlog.get_logger("readmodel.projections")


class EngineHooks(TimeoutHooks):
    """Extension point (metrics, tracing): subclass and override; no-ops by default (the
    handler timeout's hooks too: :class:`projections.handler_timeout.TimeoutHooks`)."""

    def after_batch(self, lane: Lane, result: BatchResult, seconds: float) -> None:
        """Called after each committed apply transaction of ``lane``, taking ``seconds``."""


@dataclass(frozen=True, slots=True)
class LaneProgress:
    lane: Lane
    applied: int
    parked: int
    checkpoint: int


class ProjectionEngine(LaneFailures, ParkedOperations):
    """Applies log events to projections through their stores. Plain Python, no broker.

    Its failing events are handled by :class:`LaneFailures`, its parked events (list, retry,
    skip) by :class:`ParkedOperations`."""

    def __init__(
        self,
        reader: LogReader,
        projections: Iterable[Projection],
        stores: Mapping[str, Store],
        *,
        batch_size: int = 2000,
        max_attempts: int = 5,
        retry_backoff: float = 0.1,
        cache: Cache | None = None,
        groups: Iterable[str] = (),
        handler_timeout: float | None = None,
        stuck_after: float | None = None,
    ) -> None:
        self.reader = reader
        self.groups = frozenset(groups)
        """Configured source groups (static members, tenant registries): a projection
        subscribed to one has lanes for its members in the log only."""
        self.projections = {p.name: p for p in projections}
        self.stores = dict(stores)
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.handler_timeout = handler_timeout
        """Seconds one event's handler may run before its event fails
        (``projections/handler_timeout.py``); ``None``: no bound."""
        self.stuck_after = stuck_after
        """Seconds past ``handler_timeout`` after which a handler not back is handed to
        :attr:`on_stuck`; ``None``: never."""
        self.on_stuck: OnStuck | None = None
        """Called (from the watchdog thread) with a handler stuck past :attr:`stuck_after`:
        the worker process exits to be restarted (``workers/stuck_exit.py``)."""
        self._reached: dict[Lane, int] = {}
        self._lanes_lock = threading.Lock()
        self._running: set[Lane] = set()
        self._wanted: dict[Lane, int] = {}
        self.hooks = EngineHooks()
        self.stopping = threading.Event()
        """Set on shutdown: :meth:`process` returns after the batch in hand (the sweeper or
        the next message brings the lane the rest of the way)."""
        for projection in self.projections.values():
            if projection.store not in self.stores:
                raise ReadmodelError(
                    f"projection {projection.name!r} uses store {projection.store!r}, "
                    f"which is not configured"
                )
        for store in self.stores.values():
            store.share_log(reader.engine)
        self.cache = cache
        """Invalidated by tag after every committed batch (``projections/invalidations.py``)."""
        if cache is not None:
            for store in self.stores.values():
                store.journal_invalidations = True

    def store_of(self, projection: Projection | str) -> Store:
        if isinstance(projection, str):
            projection = self.projection(projection)
        return self.stores[projection.store]

    def projection(self, name: str) -> Projection:
        try:
            return self.projections[name]
        except KeyError:
            known = ", ".join(sorted(self.projections)) or "none"
            raise ReadmodelError(f"unknown projection {name!r} (known: {known})") from None

    def create_tables(self) -> None:
        by_store: dict[str, list[Projection]] = {}
        for projection in self.projections.values():
            by_store.setdefault(projection.store, []).append(projection)
        for name, store in self.stores.items():
            store.create_tables(by_store.get(name, []))

    def lanes(
        self,
        projection: Projection,
        source: str | None = None,
        heads: Mapping[str, int] | None = None,
    ) -> list[Lane]:
        """The lanes of ``projection`` (of one ``source`` only, when given). A subscribed
        group's lanes are those of its member sources in the log (``heads``: the log heads,
        read when not given)."""
        if source is not None:
            sources = [source] if projection.reads(source) else []
        else:
            logged = self.reader.heads() if heads is None else heads
            sources = projection.lane_sources(logged, self.groups)
        return [Lane(projection.name, s, p) for s in sources for p in range(projection.partitions)]

    def lane_of(self, projection: Projection, event: Envelope) -> Lane:
        partition = aggregate_hash(event.aggregate_type, event.aggregate_id)
        return Lane(projection.name, event.source, partition % projection.partitions)

    def subscribers(self, source: str) -> list[Projection]:
        return [p for p in self.projections.values() if p.reads(source)]

    # -- applying ------------------------------------------------------------------

    def process_trigger(
        self, lane: Lane, target: int, checkpoint: int | None = None
    ) -> LaneProgress | None:
        """A message says the lane has work up to ``target``.

        A no-op without any round trip when this process already brought the lane that far
        (checkpoints move forward but for a replay's: a blue/green replay starts a member
        source first logged during the rebuild again from 0). The sweep's messages carry the
        ``checkpoint`` they read: one behind what this process reached was moved back, and
        the lane is applied from the store's checkpoint (a message racing this process's own
        progress costs one read more). When another thread of this process is applying
        the lane, the target is handed to that thread, which goes on until it has reached
        it, instead of a second thread queueing on the lane's checkpoint lock. Otherwise
        :meth:`process` up to the log head, which makes later messages no-ops too.
        """
        if checkpoint is not None and self._reached.get(lane, -1) > checkpoint:
            with self._lanes_lock:
                self._reached[lane] = min(self._reached.get(lane, -1), checkpoint)
        if self._reached.get(lane, -1) >= target:
            return None
        with self._lanes_lock:
            if lane in self._running:
                self._wanted[lane] = max(self._wanted.get(lane, 0), target)
                return None
            self._running.add(lane)
        try:
            progress = self.process(lane)
            while True:
                with self._lanes_lock:
                    wanted = self._wanted.pop(lane, -1)
                    if wanted <= self._reached.get(lane, -1) or self.stopping.is_set():
                        self._running.discard(lane)
                        return progress
                progress = self.process(lane)
        except BaseException:
            with self._lanes_lock:
                self._running.discard(lane)
                self._wanted.pop(lane, None)
            raise

    def process(
        self, lane: Lane, target: int | None = None, stop_at: float | None = None
    ) -> LaneProgress:
        """Apply the lane's events up to ``target`` (default: the log head now), stopping
        early once :attr:`stopping` is set or past ``stop_at`` (``time.monotonic()``).

        Raises :class:`RetryLater` when a handler failed fewer than
        ``max_attempts`` times; progress before the failing event is kept. Raises
        :class:`StoreError` when an event it parked fails again: its hold does not hold it,
        and going on would fail and park it forever.
        """
        projection = self.projection(lane.projection)
        store = self.store_of(projection)
        with naming(store):  # a store's error says which, with several
            return self._process(projection, store, lane, target, stop_at)

    def _process(
        self,
        projection: Projection,
        store: Store,
        lane: Lane,
        target: int | None,
        stop_at: float | None,
    ) -> LaneProgress:
        if target is None and not store.reads_log_head:
            target = self.reader.heads().get(lane.source, 0)
        applied = parked = 0
        checkpoint = 0
        one_by_one_upto = -1  # after refused writes: batches of one event up to here
        settled: set[int] = set()  # failed events parked (or applied by a rebuild) meanwhile
        while True:
            started = time.perf_counter()
            failure: HandlerFailed | None = None
            try:
                limit = 1 if checkpoint < one_by_one_upto else self.batch_size
                result = self._apply(projection, store, lane, target, limit)
            except WritesRefused as refused:
                logger.warning(
                    "batch writes refused; applying its events one by one",
                    projection=lane.projection,
                    source=lane.source,
                    upto=refused.upto,
                    error=named(store, repr(refused.error)),
                )
                one_by_one_upto = refused.upto
                continue
            except HandlerFailed as failed:
                failure = failed
            if failure is not None:  # out of the except: an earlier event's failure met
                # while the events before this one are applied would chain this one, and
                # its parked traceback would begin with this event's.
                not_parked_again(lane, failure, settled)
                try:
                    applied += self._failed(projection, store, lane, failure, settled)
                except RetryLater as retry:
                    retry.applied += applied
                    raise
                if self.stopping.is_set() or (stop_at is not None and time.monotonic() > stop_at):
                    reached = max(checkpoint, self._reached.get(lane, -1))  # the events before
                    return LaneProgress(lane, applied, parked, reached)
                continue
            if not result.noop:
                self.hooks.after_batch(lane, result, time.perf_counter() - started)
            applied += result.applied
            parked += result.parked
            checkpoint = result.checkpoint
            if checkpoint > self._reached.get(lane, -1):
                self._reached[lane] = checkpoint
            if target is None:  # the store read the head: go on until a batch reached it
                reached = result.target is None or checkpoint >= result.target
            else:
                reached = checkpoint >= target
            if result.noop or reached or self.stopping.is_set():
                return LaneProgress(lane, applied, parked, checkpoint)

    def _apply(
        self, projection: Projection, store: Store, lane: Lane, target: int | None, limit: int
    ) -> BatchResult:
        event_types = projection.event_types(lane.source)

        def load(after: int, upto: int, limit: int) -> Sequence[Envelope]:
            return self.reader.lane_events(
                lane.source,
                after,
                upto,
                partitions=projection.partitions,
                partition=lane.partition,
                event_types=event_types,
                limit=limit,
            )

        on_stuck = None if self.on_stuck is None else counting(self.on_stuck, store, lane)
        with handler_limit(self.handler_timeout, self.hooks, self.stuck_after, on_stuck):
            result = store.apply_batch(projection, lane, target, load, limit)
        if result.invalidation is not None and self.cache is not None:
            invalidations.finish(self.cache, store, result.invalidation)
        return result

    def redo_invalidations(self, older_than: float = 0.0) -> int:
        """Do the cache invalidations a crash (or an unreachable cache) left journaled, at
        least ``older_than`` seconds old; returns how many batches' worth."""
        if self.cache is None:
            return 0
        return invalidations.redo(self.cache, self.stores.values(), older_than)

    def catch_up(self, projections: Iterable[str] | None = None, deadline: float = 600) -> int:
        """Apply every lane up to the log head, retrying failures in process; returns events
        applied. Used by ``readmodel run --until-caught-up`` and tests."""
        names = list(self.projections) if projections is None else list(projections)
        heads = self.reader.heads()
        applied = 0
        stop_at = time.monotonic() + deadline
        pending = [lane for n in names for lane in self.lanes(self.projection(n), None, heads)]
        while pending:
            lane = pending.pop(0)
            try:
                applied += self.process(lane, heads.get(lane.source, 0), stop_at).applied
            except RetryLater as retry:
                applied += retry.applied
                if time.monotonic() + retry.delay > stop_at:
                    raise
                time.sleep(retry.delay)
                pending.append(lane)
        return applied

    def lagging(self, projections: Iterable[str] | None = None) -> list[tuple[Lane, int, int]]:
        """Lanes whose checkpoint trails their source's log head: ``(lane, checkpoint, head)``."""
        heads = self.reader.heads()
        out = []
        names = list(self.projections) if projections is None else list(projections)
        for projection in map(self.projection, names):
            store = self.store_of(projection)
            with naming(store):
                done = store.checkpoints(projection.name)
            for lane in self.lanes(projection, None, heads):
                head = heads.get(lane.source, 0)
                position = done.get((lane.source, lane.partition), 0)
                if position < head:
                    out.append((lane, position, head))
        return out

    # -- stores --------------------------------------------------------------------

    def parking_stores(self) -> list[Store]:
        """Each store once: where parked events are kept."""
        return self._distinct_stores()

    def _distinct_stores(self) -> list[Store]:
        """Each store once (several names may share one)."""
        return list({id(store): store for store in self.stores.values()}.values())

    def close(self) -> None:
        for store in self._distinct_stores():
            store.close()
