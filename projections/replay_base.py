"""What the table and document replayers share (:class:`ReplayerBase`): progress reports,
reading the log, and the cache invalidation of every entry of the projection."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

import structlog

from outbox.envelope import Envelope
from projections import invalidations
from projections.api import Projection
from projections.invalidations import WHOLE_PROJECTION
from projections.log_reader import LogReader
from projections.log_stream import collect_batch, stream_batches
from projections.replay_policy import ErrorPolicy
from projections.replay_skipped import OperatorSkips
from projections.replay_types import ReplayHooks, ReplaySummary
from projections.store import Invalidation

logger = structlog.get_logger("readmodel.replay")

_CHUNK = 500  # positions per read of the log


class ReplayerBase:
    """What the table and document replayers share: progress reports, reading the log, and
    the cache invalidation of every entry of the projection, journaled in the transaction
    that changes the live model (a crash, or Redis down, before :meth:`_invalidate` is
    redone)."""

    cache: Any
    store: Any
    projection: Projection
    reader: LogReader
    hooks: ReplayHooks
    batch_size: int
    _applied: int
    _total: int
    _reached: dict[str, int]
    """Per source, the furthest position reported to the hooks in this run."""
    _policy: ErrorPolicy
    _skips: OperatorSkips | None = None
    swapped: bool = False
    """Whether this replayer's last rebuild committed its swap: interrupted after it (while
    the old tables or generation are dropped), the rebuilt model is the live one."""

    def _finished(self, summary: ReplaySummary, started: float) -> ReplaySummary:
        """``summary`` completed with the skipped events and the time since ``started``."""
        summary.skipped = list(self._policy.skipped)
        summary.skipped_by_operator = len(self._skips.left_out) if self._skips else 0
        summary.skipped_by_operator_failed = len(self._skips.failed) if self._skips else 0
        summary.seconds = time.monotonic() - started
        logger.info(
            "replay finished",
            projection=self.projection.name,
            mode=summary.mode,
            events=summary.events,
            skipped=len(summary.skipped),
            seconds=round(summary.seconds, 3),
        )
        return summary

    def _overruled(self) -> dict[str, list[Envelope]]:
        """After a read of the skipped set: the events this rebuild skipped (failed, or held
        behind a failure) that an operator skipped since are forgotten, left out (not parked
        at the swap: the operator's skip wins), and the events held behind those that failed
        are returned, per source in log order, for the caller to apply (the live lanes
        applied them after the skip); those skipped too stay out. Only skips read after the
        start (:attr:`OperatorSkips.late`) overrule: one read at the start the rebuild met
        only with ``apply_skipped`` (asked to apply it again), so held behind a new failure
        it is parked, to be applied with it. Outside any transaction."""
        if self._skips is None or not self._policy.overruled(self._skips.late):
            return {}
        failed = {(s.source, s.position) for s in self._policy.skipped if s.held_behind is None}
        gone, again = self._policy.overrule(self._skips.late)
        self._skips.left_out |= gone
        self._skips.failed |= gone & failed  # not those only held behind a failure
        logger.warning(
            "replay: events it skipped were skipped by an operator meanwhile; they stay skipped",
            projection=self.projection.name,
            events=[f"{source}:{position}" for source, position in sorted(gone)],
            held_behind=sum(map(len, again.values())),
        )
        found: dict[str, list[Envelope]] = {}
        for source, positions in sorted(again.items()):
            positions.sort()
            events = [
                event
                for at in range(0, len(positions), _CHUNK)
                for event in self.reader.at_positions(source, positions[at : at + _CHUNK])
            ]
            found[source] = list(self._skips.kept(events))
        return found

    def _report(self, source: str, position: int, applied: int) -> None:
        """Tell the hooks; the position of ``source`` never goes back: events applied again
        after later ones (those held behind an event an operator skipped meanwhile, or a
        transaction's rolled back and redone) are reported at the position reached."""
        collect_batch()
        self._applied += applied
        self._total = max(self._total, self._applied)
        reached = self._reached.setdefault(source, position)
        if position > reached:
            self._reached[source] = reached = position
        self.hooks.progress(source, reached, self._applied, self._total)

    def _stream(
        self,
        source: str,
        after: int,
        upto: int,
        tenant: str | None = None,
        *,
        size: int | None = None,
        depth: int = 2,
    ) -> Iterator[list[Envelope]]:
        """The projection's events of ``source`` in ``(after, upto]``, in batches of ``size``
        (``batch_size`` by default) read up to ``depth`` batches ahead, through a server-side
        cursor on PostgreSQL; without the events an operator skipped (:attr:`_skips`)."""
        batches = stream_batches(
            self.reader.engine,
            source,
            after,
            upto,
            self.projection.event_types(source),
            tenant=tenant,
            batch_size=size or self.batch_size,
            depth=depth,
        )
        yield from self._skips.leave_out(batches) if self._skips else batches

    def _journal_whole_projection(self, tx: Any) -> Invalidation | None:
        if self.cache is None or not self.store.journal_invalidations:
            return None
        return cast(
            "Invalidation | None", self.store.journal(tx, self.projection.name, {WHOLE_PROJECTION})
        )

    def _invalidate(self, invalidation: Invalidation | None) -> None:
        if invalidation is not None and self.cache is not None:
            invalidations.finish(self.cache, self.store, invalidation)
