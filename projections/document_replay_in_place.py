"""The in-place replay of :class:`projections.document_replay.DocumentReplayer`
(``from_position``, for ``replay_safe`` projections): the events after the position applied
again to the current generation, each batch in one transaction that writes the lanes'
checkpoints (without moving them) and applies only events up to them, on until the lanes'
current checkpoints (as :mod:`projections.replay_in_place` does for tables)."""

from __future__ import annotations

from functools import partial

from pymongo.client_session import ClientSession

from outbox.envelope import Envelope, aggregate_hash
from projections.document_generations import collections_at, generation_of
from projections.document_holds import blocked_aggregates
from projections.document_replay_tx import DocumentReplayTx, _Refused, every_failure
from projections.mongo_store import MongoStore
from projections.replay_ranges import apply_in_ranges
from projections.replay_scope import chase_checkpoints, furthest_checkpoint
from projections.replay_types import ReplayOptions, ReplayPlan, ReplaySummary
from projections.store import Invalidation, Lane, is_held


class DocumentInPlaceReplay(DocumentReplayTx):
    """Applying a range of the log again to the current generation (see the module
    docstring)."""

    store: MongoStore

    def _in_place(self, options: ReplayOptions, plan: ReplayPlan, summary: ReplaySummary) -> None:
        name = self.projection.name
        partitions = self.projection.partitions
        for source_plan in plan.sources:
            source = source_plan.source
            lanes = [Lane(name, source, p) for p in range(partitions)]
            summary.applied[source] = 0
            furthest = furthest_checkpoint(self.store, self.projection, source)
            reached = furthest()
            for after, reached in chase_checkpoints(source_plan.after, furthest):
                for streamed in self._stream(source, after, reached, options.tenant):
                    self._in_place_ranges(source, lanes, streamed, summary)
            summary.checkpoints[source] = reached
        summary.tables = list(self.projection.collections)

    def _in_place_ranges(
        self, source: str, lanes: list[Lane], streamed: list[Envelope], summary: ReplaySummary
    ) -> None:
        """Apply ``streamed`` in place in ranges after failures, as the table replay in place
        does (:class:`projections.replay_ranges.BatchRanges`: the events before a failing
        one first, so a write refused among them is met first)."""

        def attempt(events: list[Envelope]) -> tuple[int, Invalidation | None]:
            work = partial(self._in_place_batch, lanes=lanes, events=events)
            return self._attempt(work, hand_back=every_failure)  # rolled back, undone

        def committed(events: list[Envelope], result: tuple[int, Invalidation | None]) -> None:
            applied, invalidation = result
            self._invalidate(invalidation)
            summary.applied[source] += applied
            self._report(source, events[-1].position or 0, applied)

        apply_in_ranges(streamed, attempt, committed, fail=self._policy.fail, refused=_Refused)

    def _in_place_batch(
        self, session: ClientSession, *, lanes: list[Lane], events: list[Envelope]
    ) -> tuple[int, Invalidation | None]:
        """Apply the batch's events the lanes have applied already (up to their
        checkpoints, which this transaction writes, so that no live batch interleaves) and
        whose aggregate is not held by a parked event."""
        done = {lane.partition: self.store.lock_lane(session, lane) for lane in lanes}
        held = blocked_aggregates(self.database, session, self.projection.name, lanes[0].source)
        if self._skips is not None:  # as projections.replay_in_place does (_not_skipped)
            self._reread_skips(session)
            events = list(self._skips.kept(events))
        partitions = self.projection.partitions
        due = [
            e
            for e in events
            if (e.position or 0)
            <= done[aggregate_hash(e.aggregate_type, e.aggregate_id) % partitions]
            and not is_held(held, e)
        ]
        if not due:
            self._prove_lease(session)
            return 0, None
        generation = generation_of(self.database, self.projection.name, session)
        applied = self._apply(session, due, collections_at(self.projection, generation))
        self._prove_lease(session)
        return applied, self._journal_whole_projection(session)
