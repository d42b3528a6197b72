"""Rebuild a document projection (a MongoDB store) from the event log: blue/green into a new
generation of its collections, or in place.

MongoDB cannot rename several collections in one transaction (nor rename inside one), so
a rebuild writes the next generation of the projection's collections
(``<name>__g<N>``, :mod:`projections.document_generations`), source by source in log
order, in large batches (one transaction per batch: the batch's ``bulk_write`` per
collection and the shadow's progress, kept as the checkpoints of ``<name>__rebuild``),
while the live lanes keep applying new events to the current generation. Near the head,
one transaction writes every live lane's checkpoint (a live batch that started before it
conflicts on its checkpoint and is retried, on the new generation), applies the events
between the shadow's progress and the furthest live checkpoint, moves the projection's
``rm_generations`` document to the new generation, sets the lanes' checkpoints, settles
parked events and journals a whole-projection cache invalidation. Readers see the old
generation until that commit and the new one after; the old collections are dropped
``retire_after`` seconds after it (a reader that met them while they went checks the
generation and reads again). The swap's session is recorded with a heartbeat
(:mod:`projections.document_swap_guard`): killed inside it, this process does not hold the
live lanes until the server ends its transaction.

Handlers are strict, as in :mod:`projections.replay`: an error stops the replay with the
event unless ``skip_errors``. In place (``from_position``, ``replay_safe`` projections
only): the events after the position are applied again to the current generation, each
batch in one transaction that writes the lanes' checkpoints (without moving them) and
applies only events up to them, on until the lanes' current checkpoints (as in
:mod:`projections.replay`). One replay per projection at a time: a lease document
(:func:`projections.replay_lock.mongo_replay_lease`), which every batch and the swap write
in their transaction, conditioned on this replay's owner: a replay that stalled past its
lease and was taken over stops at its next batch, writing nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog
from pymongo.client_session import ClientSession
from pymongo.errors import PyMongoError

from outbox.errors import StoreError
from outbox.mongo_connection import describe_mongo_error
from projections.api import Projection
from projections.document_collections import (
    create_collection_indexes,
    create_collections,
    index_warnings,
)
from projections.document_generations import (
    GENERATIONS,
    check_recorded,
    collections_at,
    forget_retired,
    generation_of,
    leftovers,
    mark_building,
    retired_field,
    warn_unrecorded,
)
from projections.document_replay_fill import DocumentShadowFill
from projections.document_replay_in_place import DocumentInPlaceReplay
from projections.document_replay_tx import _Refused, every_failure
from projections.document_settle import settle_parked
from projections.document_swap_guard import swap_heartbeat
from projections.log_reader import LogReader
from projections.log_stream import batch_gc
from projections.mongo_store import (
    CHECKPOINTS,
    MongoStore,
    lane_id,
)
from projections.rebuild_names import rebuild_checkpoints
from projections.replay_catch_up import CatchUp
from projections.replay_lock import LEASE_SECONDS, checked_lease, replay_lock
from projections.replay_plan import source_plans
from projections.replay_policy import (
    ErrorPolicy,
    HandlerError,
    Overruled,
)
from projections.replay_skip_policy import SkipsPolicy
from projections.replay_skipped import document_planned, document_skips
from projections.replay_types import (
    BLUE_GREEN,
    ReplayHooks,
    ReplayOptions,
    ReplayPlan,
    ReplayRefused,
    ReplaySummary,
    not_unmarked,
)
from projections.store import Invalidation, Lane

logger = structlog.get_logger("readmodel.replay")

RETIRE_AFTER = 5.0
"""Seconds the old generation is kept after the swap (see projections.document_generations)."""


class DocumentReplayer(DocumentInPlaceReplay, DocumentShadowFill):
    """Rebuilds one document projection; the same interface as
    :class:`projections.replay.Replayer` (``plan``, ``run``, ``cleanup``)."""

    def __init__(
        self,
        reader: LogReader,
        projection: Projection,
        store: MongoStore,
        *,
        cache: Any = None,
        hooks: ReplayHooks | None = None,
        batch_size: int = 20_000,
        retire_after: float = RETIRE_AFTER,
        lease: float = LEASE_SECONDS,
    ) -> None:
        if not isinstance(store, MongoStore):
            raise ReplayRefused(
                f"{projection.name}: a document replay needs a MongoDB store "
                f"(this projection's store {projection.store!r} is not one)"
            )
        self.reader = reader
        self.projection = projection
        self.store = store
        self.database = store.database
        self.cache = cache
        self.hooks = hooks or ReplayHooks()
        self.batch_size = batch_size
        self.retire_after = retire_after
        self.lease = checked_lease(lease)
        self.kept: list[str] = []
        self.left_alone: list[str] = []
        self.shadow_projection = rebuild_checkpoints(projection.name)
        self._policy = ErrorPolicy(projection.name, skip_errors=False, in_place=False)
        self._owner: str | None = None
        self._shadow: dict[str, str] = {}
        self._written: dict[str, set[Any]] = {}
        self._applied = 0
        self._total = 0
        self._reached: dict[str, int] = {}

    # -- planning ------------------------------------------------------------------

    def plan(self, options: ReplayOptions) -> ReplayPlan:
        """What :meth:`run` would do; reads only."""
        plans = source_plans(self.reader, self.projection, options)
        rebuild = options.mode == BLUE_GREEN
        with self._mongo("cannot read the collections"):
            generation = generation_of(self.database, self.projection.name)
            left = leftovers(self.database, self.projection, self.retire_after)
            live = collections_at(self.projection, generation)
            warnings = index_warnings(self.database, self.projection, live) if rebuild else []
            name, log = self.projection.name, self.reader.engine
            planned = document_planned(self.database, name, plans, log, options.tenant)
        written = collections_at(self.projection, generation + 1) if rebuild else live
        collections = [(live[name], written[name]) for name in self.projection.collections]
        return ReplayPlan(
            self.projection.name,
            options.mode,
            plans,
            collections,
            left.drop,
            options.tenant,
            unit="collection",
            warnings=warnings,
            skipped_by_operator=0 if options.apply_skipped else planned,
        )

    # -- running -------------------------------------------------------------------

    def run(self, options: ReplayOptions) -> ReplaySummary:
        plan = self.plan(options)
        self.swapped = False
        started = time.monotonic()
        with replay_lock(self.store, self.projection.name, self.lease) as owner:
            self._owner = owner
            self._total = plan.events
            self._reached = {}
            self.hooks.started(plan)
            summary = ReplaySummary(self.projection.name, options.mode)
            with batch_gc(), self._mongo("replay failed"):
                self._skips = document_skips(self.database, self.projection.name, options)
                self._policy = SkipsPolicy(self.projection.name, options, self._skips)
                if options.mode == BLUE_GREEN:
                    self._rebuild(summary)
                else:
                    self._in_place(options, plan, summary)
        return self._finished(summary, started)

    def cleanup(self, unmarked: Sequence[str] = ()) -> list[str]:
        """Drop the collections of other generations that ``rm_generations`` records (a
        shadow an interrupted rebuild left, old ones a swap did not get to drop) and the
        shadow's checkpoints; returns what was dropped. A generation retired less than
        ``retire_after`` ago is kept (:attr:`kept`); a collection merely named like a
        generation is left alone (:attr:`left_alone`) unless ``unmarked`` names it."""
        with (
            replay_lock(self.store, self.projection.name, self.lease),
            self._mongo("cleanup failed"),
        ):
            return self._cleanup(unmarked)

    def _cleanup(self, unmarked: Sequence[str] = ()) -> list[str]:
        named = list(dict.fromkeys(unmarked))
        if named:
            found = leftovers(self.database, self.projection, self.retire_after).unrecorded
            for name in named:
                if name not in found:
                    raise not_unmarked(
                        name,
                        f"a collection named like a generation of {self.projection.name!r} "
                        "that readmodel did not record",
                        found,
                    )
        check_recorded(self.database, self.projection, allowed=named)
        left = leftovers(self.database, self.projection, self.retire_after)
        self.left_alone = [n for n in left.unrecorded if n not in named]
        warn_unrecorded(self.projection.name, self.left_alone)
        dropped = left.drop + [n for n in named if n not in left.drop]
        for name in dropped:
            self.database.drop_collection(name)
        forget_retired(self.database, self.projection.name, left.expired)
        mark_building(self.database, self.projection.name, None)
        self.database[CHECKPOINTS].delete_many({"projection": self.shadow_projection})
        self.kept = left.kept
        return dropped

    # -- blue/green ----------------------------------------------------------------

    def _rebuild(self, summary: ReplaySummary) -> None:
        self._cleanup()
        old = generation_of(self.database, self.projection.name)
        self._shadow = collections_at(self.projection, old + 1)
        self._written = {}
        mark_building(self.database, self.projection.name, old + 1)
        create_collections(self.database, self._shadow.values())
        create_collection_indexes(self.database, self.projection, self._shadow)
        sources: list[str] = []
        progress: dict[str, int] = {}
        summary.applied = {}
        catch_up = CatchUp(self.batch_size)
        first = True
        while True:
            if not first:  # skipped since: left out of this pass
                self._reread_skips()
                self._apply_overruled(summary)
            first = False
            heads = self.reader.heads()
            added = self._add_sources(sources, progress, self.projection.lane_sources(heads))
            behind = 0
            for source in sources:
                head = heads.get(source, 0)
                behind += head - progress[source]
                for events in self._stream(source, progress[source], head):
                    self._shadow_batch(source, events, summary)
                    progress[source] = events[-1].position or progress[source]
                if head > progress[source]:
                    progress[source] = head
                    self._attempt(partial(self._shadow_checkpoint, source=source, position=head))
            if catch_up.done(behind, added=bool(added)):
                break
        self.hooks.before_swap()
        self._swap(sources, progress, summary, old)

    def _add_sources(
        self, sources: list[str], progress: dict[str, int], found: Sequence[str]
    ) -> list[str]:
        """Add the sources of ``found`` not yet rebuilt (the members of a group grow while
        the rebuild runs: a new tenant), from position 0; returns them."""
        new = [s for s in found if s not in progress]
        if new:
            self._init_shadow_checkpoints(new)
            sources.extend(new)
            progress.update(dict.fromkeys(new, 0))
        return new

    def _swap(
        self, sources: list[str], progress: dict[str, int], summary: ReplaySummary, old: int
    ) -> None:
        name = self.projection.name
        self._add_sources(sources, progress, self.projection.lane_sources(self.reader.heads()))
        lanes = [Lane(name, s, p) for s in sources for p in range(self.projection.partitions)]

        def work(
            session: ClientSession,
        ) -> tuple[dict[str, int], dict[str, int], int, Invalidation | None]:
            self._prove_lease(session, "nothing was swapped")
            record(session)
            live = {lane: self.store.lock_lane(session, lane) for lane in lanes}
            # The last read of the skipped set: a skip committed before it is left out of
            # the catch-up below (one committed after it conflicts with the settling).
            self._reread_skips(session)
            if self._skips is not None and self._policy.overruled(self._skips.late):
                raise Overruled  # the rebuild skipped one of them: settled outside
            if generation_of(self.database, name, session) != old:
                raise StoreError(
                    f"{name}: another replay swapped in meanwhile; nothing was swapped"
                )
            targets = {
                s: max([progress[s], *(cp for lane, cp in live.items() if lane.source == s)])
                for s in sources
            }
            applied = dict.fromkeys(sources, 0)
            for source in sources:
                for events in self._stream(source, progress[source], targets[source]):
                    applied[source] += self._apply(session, events, self._shadow)
            now = datetime.now(UTC)
            self.database[GENERATIONS].update_one(
                {"_id": name},
                {
                    "$set": {
                        "generation": old + 1,
                        "swapped_at": now,
                        retired_field(old): now,
                        f"retire_after.g{old}": self.retire_after,
                    },
                    "$unset": {"building": ""},
                },
                upsert=True,
                session=session,
            )
            for lane in lanes:
                self.database[CHECKPOINTS].update_one(
                    {"_id": lane_id(lane)},
                    {"$set": {"position": targets[lane.source], "updated_at": now}},
                    session=session,
                )
            # A member source first logged after the heads were read (a new tenant) was
            # applied live to the old generation only: it starts again from 0.
            self.database[CHECKPOINTS].delete_many(
                {"projection": name, "source": {"$nin": sources}}, session=session
            )
            released = self._settle_parked(session)
            invalidation = self._journal_whole_projection(session)
            self.database[CHECKPOINTS].delete_many(
                {"projection": self.shadow_projection}, session=session
            )
            return targets, applied, released, invalidation

        with swap_heartbeat(self.database, name, self._owner) as record:
            while True:
                try:
                    done = self._attempt(work, hand_back=every_failure)
                    targets, applied, released, invalidation = done
                    self.swapped = True
                    break
                except Overruled:
                    self._apply_overruled(summary)
                    continue
                except _Refused:
                    catch_up = self.reader.heads()
                except HandlerError as failed:
                    catch_up = {failed.event.source: failed.event.position or 0}
                # Applied outside the swap, as the table swap (projections/replay.py) does.
                self._reread_skips()
                self._apply_overruled(summary)
                for source in sources:
                    upto = catch_up.get(source, 0)
                    if upto > progress[source]:
                        for events in self._stream(source, progress[source], upto):
                            self._shadow_batch(source, events, summary)
                        progress[source] = upto
        swapped = time.monotonic()
        self._invalidate(invalidation)
        for source, count in applied.items():
            summary.applied[source] = summary.applied.get(source, 0) + count
            self._report(source, targets[source], count)
        summary.released_parked = released
        summary.checkpoints = targets
        summary.tables = list(self.projection.collections)
        self._retire(old, swapped)

    def _retire(self, old: int, swapped: float) -> None:
        """Drop the old generation once ``retire_after`` has passed since the swap (an
        interruption meanwhile leaves it to the next replay or ``--cleanup``)."""
        time.sleep(max(0.0, swapped + self.retire_after - time.monotonic()))
        try:
            for collection in collections_at(self.projection, old).values():
                self.database.drop_collection(collection)
            forget_retired(self.database, self.projection.name, [old])
        except PyMongoError as exc:
            logger.warning(
                "cannot drop the old generation; the next replay or --cleanup drops it",
                projection=self.projection.name,
                error=describe_mongo_error(exc),
            )

    def _settle_parked(self, session: ClientSession) -> int:
        name, skipped = self.projection.name, self._policy.skipped
        return settle_parked(self.store, session, name, skipped, self._skips)
