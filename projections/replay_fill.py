"""Filling a blue/green rebuild's shadow tables from the log (for
:class:`projections.replay.Replayer`).

The log is read ``read_size`` events at a time (a thread reads the next part while the
handlers run; parts much smaller than 50,000 cost the handlers and the flush measurably
more CPU: ``bench/replay.py``), but a transaction spans ``rebuild_batch`` events: nothing
else writes a shadow, so a long transaction holds nobody up, and the larger it is, the
more of the writes to one row (an order placed, paid, then shipped) fold into one, and the
more of the rows are new ones COPYed rather than upserted (on PostgreSQL: on SQLite a
transaction holds the database's one write lock, and the live lanes wait for it). A
failing event or a refused write rolls the transaction back; its events are read again and
applied by :meth:`ShadowFill._shadow_batch`, which stops at the event, skips it
(``skip_errors``), or halves the batch down to the event whose write the database refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from functools import partial

import sqlalchemy as sa

from outbox.envelope import Envelope
from projections.replay_apply import Refused, TableReplayerBase
from projections.replay_policy import HandlerError
from projections.replay_ranges import apply_in_ranges
from projections.replay_types import ReplaySummary
from projections.store_tables import checkpoints

REBUILD_BATCH = 100_000
"""Events per rebuild transaction on PostgreSQL when no batch size is given."""
FILL_READ_SIZE = 50_000
"""Events a rebuild reads from the log at a time, at most (one such part read ahead): the
batch size's equal parts (``--batch-size 70000``: two of 35,000)."""


class ShadowFill(TableReplayerBase):
    """Applies a source's events to the shadow tables, in transactions of ``rebuild_batch``
    events, updating the shadow's checkpoint in each."""

    rebuild_batch: int
    read_size: int
    shadow_projection: str

    def _fill(self, source: str, after: int, upto: int, summary: ReplaySummary) -> int:
        """Apply ``source``'s events in ``(after, upto]``; returns the last position applied
        (``after`` when there was none)."""
        done = after
        parts = self._stream(source, after, upto, size=self.read_size, depth=1)
        try:
            for part in parts:
                done = self._fill_batch(source, done, part, parts, summary)
        finally:
            parts.close()  # type: ignore[attr-defined]
        return done

    def _fill_batch(
        self,
        source: str,
        after: int,
        first: list[Envelope],
        parts: Iterator[list[Envelope]],
        summary: ReplaySummary,
    ) -> int:
        """One transaction: ``first`` and the parts after it as long as the next would not
        take it past ``rebuild_batch`` events (a part is not split: the default part size
        divides the batch size); returns its last position. If it fails, its events are
        read again and applied by :meth:`_shadow_batch` (outside the ``except``: an error
        there would chain this one, and every parked event's traceback the ones before it)."""
        mark = self._policy.mark()
        last = after
        applied = reported = 0
        rolled_back = False
        failing: int | None = None  # the position of a failing handler's event
        try:
            with self._write() as conn:
                tx = self._tx(conn, self.shadow.mapping, lock_rows=False)
                part: list[Envelope] | None = first
                taken = 0
                while part is not None:
                    last = part[-1].position or last
                    applied += self._refusing(part, lambda: self._handle(tx, part))  # noqa: B023
                    taken += len(part)
                    if taken + self.read_size > self.rebuild_batch:
                        break  # the next part would take it past the batch size
                    # Progress with each part, not once a transaction: taken back below if
                    # the transaction rolls back (its events are counted as applied again).
                    self._report(source, last, applied - reported)
                    reported = applied
                    part = next(parts, None)
                self._refusing((), tx.flush)
                self._set_shadow_checkpoint(conn, source, last)
        except (HandlerError, Refused) as exc:
            self._policy.undo(mark)
            self._applied -= reported
            rolled_back = True
            if isinstance(exc, HandlerError):
                failing = exc.event.position
        if rolled_back:
            with closing(self._stream(source, after, last)) as again:  # Ctrl-C: reader ends
                events = [event for part in again for event in part]
            at = next((i for i, e in enumerate(events) if e.position == failing), None)
            self._shadow_batch(source, events, summary, failing=at)
            return last
        summary.applied[source] = summary.applied.get(source, 0) + applied
        self._report(source, last, applied - reported)
        return last

    def _apply_overruled(self, summary: ReplaySummary) -> None:
        """Apply the events held behind those the rebuild skipped that an operator skipped
        since (:meth:`ReplayerBase._overruled`), which the live lanes applied after the
        skip; the shadow's checkpoints stay where they are (past them)."""
        for source, events in self._overruled().items():
            if events:
                self._shadow_batch(source, events, summary, checkpoint=False)

    def _shadow_batch(
        self,
        source: str,
        events: list[Envelope],
        summary: ReplaySummary,
        failing: int | None = None,
        *,
        checkpoint: bool = True,
    ) -> None:
        """Apply ``events`` in as few transactions as their failures allow
        (:class:`projections.replay_ranges.BatchRanges`: the events before a failing one
        first, a refused write's batch in halves; ``failing``: the index of an event whose
        handler failed; ``checkpoint``: whether each transaction sets the shadow's checkpoint
        to its last event). Not recursion: a replay skipping thousands of events in one
        transaction neither nests that deep nor chains each failure's traceback to the one
        before."""

        def committed(batch: list[Envelope], applied: int) -> None:
            summary.applied[source] = summary.applied.get(source, 0) + applied
            self._report(source, batch[-1].position or 0, applied)

        attempt = partial(self._shadow_attempt, source, checkpoint=checkpoint)
        fail = self._policy.fail
        apply_in_ranges(events, attempt, committed, fail=fail, refused=Refused, failing=failing)

    def _shadow_attempt(
        self, source: str, batch: list[Envelope], *, checkpoint: bool = True
    ) -> int:
        """One transaction applying ``batch`` (the error policy's share undone if it
        fails); returns how many events it applied."""
        mark = self._policy.mark()
        try:
            with self._write() as conn:
                applied = self._apply(conn, batch, self.shadow.mapping, lock_rows=False)
                if checkpoint:
                    self._set_shadow_checkpoint(conn, source, batch[-1].position or 0)
        except (HandlerError, Refused):
            self._policy.undo(mark)
            raise
        return applied

    def _set_shadow_checkpoint(self, conn: sa.Connection, source: str, position: int) -> None:
        conn.execute(
            checkpoints.update()
            .where(
                checkpoints.c.projection == self.shadow_projection, checkpoints.c.source == source
            )
            .values(position=position, updated_at=sa.func.current_timestamp())
        )

    def _set_shadow_checkpoint_now(self, source: str, position: int) -> None:
        with self._write() as conn:
            self._set_shadow_checkpoint(conn, source, position)
