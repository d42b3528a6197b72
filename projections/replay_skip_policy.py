"""The error policy of a replay that knows the events an operator skipped.

``readmodel replay P --apply-skipped --skip-errors`` applies again the events an operator
skipped (``readmodel parked skip``). One whose handler still fails is not a new failure:
the operator already chose that the projection goes on without it, and the live lanes
applied the later events of its aggregate after it. So it is left out as a rebuild without
``--apply-skipped`` leaves it out: not parked again, its aggregate not held, its entry
still ``skipped`` after the swap (:func:`projections.replay_skipped.sql_settle_skipped_since`),
and counted in the summary's ``skipped_by_operator``. Any other failing event is skipped
and held as :class:`ErrorPolicy` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from outbox.envelope import Envelope
from projections.replay_policy import ErrorPolicy, HandlerError
from projections.replay_skipped import OperatorSkips
from projections.replay_types import IN_PLACE, ReplayOptions

logger = structlog.get_logger("readmodel.replay")


class SkipsPolicy(ErrorPolicy):
    """:class:`ErrorPolicy` leaving out, with ``apply_skipped`` and ``skip_errors``, the
    operator-skipped events whose handler still fails (recorded in ``skips.left_out``:
    a transaction started again leaves them out at once)."""

    def __init__(self, projection: str, options: ReplayOptions, skips: OperatorSkips) -> None:
        in_place = options.mode == IN_PLACE
        super().__init__(projection, skip_errors=options.skip_errors, in_place=in_place)
        self.skips = skips
        self._keep_skipped = skips.apply and options.skip_errors and not in_place

    def fail(self, failed: HandlerError) -> None:
        event = failed.event
        key = (event.source, event.position or 0)
        if not (self._keep_skipped and key in self.skips.entries):
            super().fail(failed)
            return
        self.skips.left_out.add(key)
        self.skips.failed.add(key)
        logger.warning(
            "replay: an event skipped by an operator still fails; it stays skipped",
            projection=self.projection,
            source=event.source,
            position=event.position,
            aggregate=f"{event.aggregate_type}:{event.aggregate_id}",
            error=repr(failed.error),
        )

    def ready(
        self, events: Sequence[Envelope], *, undoable: bool
    ) -> tuple[Sequence[Envelope], Sequence[Envelope]]:
        left_out = self.skips.left_out
        if self._keep_skipped and left_out:
            events = [e for e in events if (e.source, e.position or 0) not in left_out]
        return super().ready(events, undoable=undoable)

    def holds(self, event: Envelope) -> bool:
        if self._keep_skipped and (event.source, event.position or 0) in self.skips.left_out:
            return True
        return super().holds(event)
