"""The in-place replay of :class:`projections.replay.Replayer` (``from_position``, for
``replay_safe`` projections): events after the position applied again to the live tables,
batch by batch under the lanes' locks and only up to each lane's checkpoint."""

from __future__ import annotations

from outbox.envelope import Envelope, aggregate_hash
from projections.replay_apply import Refused, TableReplayerBase
from projections.replay_policy import HandlerError, chase_checkpoints, furthest_checkpoint
from projections.replay_types import ReplayOptions, ReplayPlan, ReplaySummary
from projections.store import Lane, is_held


class InPlaceReplay(TableReplayerBase):
    """Applying a range of the log again to the live tables (see the module docstring)."""

    def _in_place(self, options: ReplayOptions, plan: ReplayPlan, summary: ReplaySummary) -> None:
        partitions = self.projection.partitions
        for source_plan in plan.sources:
            source = source_plan.source
            lanes = [Lane(self.projection.name, source, p) for p in range(partitions)]
            summary.applied[source] = 0
            furthest = furthest_checkpoint(self.store, self.projection, source)
            reached = furthest()
            for after, reached in chase_checkpoints(source_plan.after, furthest):
                for streamed in self._stream(source, after, reached, options.tenant):
                    self._in_place_batch(source, lanes, streamed, summary)
            summary.checkpoints[source] = reached
        summary.tables = [t.name for t in self.projection.tables]

    def _in_place_batch(
        self, source: str, lanes: list[Lane], streamed: list[Envelope], summary: ReplaySummary
    ) -> None:
        """Apply the batch's events the lanes have applied already (up to their checkpoints,
        locked by this transaction, so that no live batch interleaves) and whose aggregate
        is not held by a parked event; event by event after a refused write."""
        tables = self.store.tables_for(self.projection)
        partitions = self.projection.partitions
        batches = [streamed]
        while batches:
            events = batches.pop(0)
            mark = self._policy.mark()
            try:
                with self._write() as conn:
                    cps = {lane.partition: self.store.lock_lane(conn, lane) for lane in lanes}
                    held = self.store.blocked_aggregates(conn, lanes[0])
                    due = [
                        e
                        for e in events
                        if (e.position or 0) <= cps[_partition(e, partitions)]
                        and not is_held(held, e)
                    ]
                    applied = self._apply(conn, due, tables, lock_rows=True) if due else 0
                    invalidation = self._journal_whole_projection(conn) if due else None
            except HandlerError as failed:
                self._policy.undo(mark)
                self._policy.fail(failed)
                batches.insert(0, events)
                continue
            except Refused:
                self._policy.undo(mark)
                batches[:0] = [[event] for event in events]
                continue
            self._invalidate(invalidation)
            summary.applied[source] += applied
            self._report(source, events[-1].position or 0, applied)


def _partition(event: Envelope, partitions: int) -> int:
    return aggregate_hash(event.aggregate_type, event.aggregate_id) % partitions
