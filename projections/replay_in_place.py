"""The in-place replay of :class:`projections.replay.Replayer` (``from_position``, for
``replay_safe`` projections): events after the position applied again to the live tables,
batch by batch under the lanes' locks and only up to each lane's checkpoint."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import sqlalchemy as sa

from outbox.envelope import Envelope, aggregate_hash
from projections.replay_apply import Refused, TableReplayerBase
from projections.replay_policy import HandlerError, PolicyMark
from projections.replay_ranges import apply_in_ranges
from projections.replay_scope import chase_checkpoints, furthest_checkpoint
from projections.replay_types import ReplayOptions, ReplayPlan, ReplaySummary
from projections.row_locks import OutOfOrder, RowLocks, apply_in_order
from projections.sql_tx import SqlTx
from projections.store import Invalidation, Lane, is_held


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
        is not held by a parked event; in ranges after failures
        (:class:`projections.replay_ranges.BatchRanges`).
        Its row locks are taken in order, as a live batch's
        (:func:`projections.row_locks.apply_in_order`: started again after an out-of-order
        key, a deadlock or a serialization failure)."""
        tables = self.store.tables_for(self.projection)
        every = _Lanes(self.projection.name, source, "all")

        def attempt(events: list[Envelope]) -> tuple[int, Invalidation | None]:
            mark = self._policy.mark()
            try:
                work = partial(self._in_place_attempt, lanes, events, tables, mark=mark)
                return apply_in_order(every, work)
            except (HandlerError, Refused):
                self._policy.undo(mark)
                raise

        def committed(events: list[Envelope], result: tuple[int, Invalidation | None]) -> None:
            applied, invalidation = result
            self._invalidate(invalidation)
            summary.applied[source] += applied
            self._report(source, events[-1].position or 0, applied)

        apply_in_ranges(streamed, attempt, committed, fail=self._policy.fail, refused=Refused)

    def _in_place_attempt(
        self,
        lanes: list[Lane],
        events: list[Envelope],
        tables: dict[sa.Table, sa.Table],
        locks: RowLocks,
        mark: PolicyMark,
    ) -> tuple[int, Invalidation | None]:
        """One transaction of :meth:`_in_place_batch`: the lanes' checkpoints locked first, in
        partition order, then the rows its handlers read (``locks``)."""
        self._policy.undo(mark)  # what an attempt started again holds, it finds again
        partitions = self.projection.partitions
        try:
            with self._write() as conn:
                cps = {lane.partition: self.store.lock_lane(conn, lane) for lane in lanes}
                held = self.store.blocked_aggregates(conn, lanes[0])
                due = [
                    e
                    for e in self._not_skipped(conn, events)
                    if (e.position or 0) <= cps[_partition(e, partitions)] and not is_held(held, e)
                ]
                if not due:
                    return 0, None
                tx = SqlTx(conn, tables, projection=self.projection, locks=locks)

                def apply() -> int:
                    applied = self._handle(tx, due)
                    tx.flush()
                    return applied

                applied = self._refusing(due, apply)
                return applied, self._journal_whole_projection(conn)
        except OutOfOrder:
            raise
        except Exception as exc:  # a handler's error (or its wrapping) after an OutOfOrder
            if locks.restart is not None:
                raise locks.restart from exc
            raise

    def _not_skipped(self, conn: sa.Connection, events: list[Envelope]) -> list[Envelope]:
        """``events`` without those an operator skipped, the set read again in ``conn``'s
        transaction (an event parked when the replay started holds its aggregate, so it was
        not applied; skipped since, it no longer does)."""
        if self._skips is None:
            return events
        self._reread_skips(conn)
        return list(self._skips.kept(events))


class _Lanes(NamedTuple):
    """Every lane of a source, as :func:`apply_in_order` logs them."""

    projection: str
    source: str
    partition: str


def _partition(event: Envelope, partitions: int) -> int:
    return aggregate_hash(event.aggregate_type, event.aggregate_id) % partitions
