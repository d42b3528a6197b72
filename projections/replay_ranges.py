"""Which events of a replay batch its next transaction applies, after failures: the rebuild
of tables (:mod:`projections.replay_fill`) and of documents, and the in-place replay."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from outbox.envelope import Envelope
from projections.replay_policy import HandlerError, index_of

_T = TypeVar("_T")

MIN_SPAN = 4
"""Events in a range after a skipped event, at the least (see :class:`BatchRanges`)."""


class BatchRanges:
    """A batch of ``size`` events applied in ranges ``[start, end)``, one transaction each:
    whole at first; after a handler fails, the events before its event apart (a write
    refused among them comes first), then that event alone (the caller has the error
    policy hold its aggregate, or stop, when it fails again), then the events after it;
    after a refused write, each half apart.

    After an event is skipped, ranges start at twice the distance from the skipped event
    before it (:data:`MIN_SPAN` at the least) and double with each one committed: a range's
    prefetch reads every row its events name, and its handlers run up to the next failure,
    which rolls them back. Ranges running to the batch's end after each skipped event made
    a replay skipping many events (a handler bug hitting one event type) do work growing
    with the failures times the batch; so it grows with the batch, a few times over.

    ``failing``: the index of an event whose handler is known to fail (a larger
    transaction holding the batch failed there): it is the first taken alone.
    """

    def __init__(self, size: int, failing: int | None = None) -> None:
        self._todo = [(0, size)] if size else []
        self._failing: int | None = None  # taken alone next
        self._span: int | None = None  # no bound until an event is skipped
        self._skipped = 0  # index of the last event skipped (of the batch's start before)
        if failing is not None and 0 <= failing < size:
            self._todo = [(failing, size), (0, failing)] if failing else [(0, size)]
            self._failing = failing

    def __bool__(self) -> bool:
        return bool(self._todo)

    def take(self) -> tuple[int, int]:
        """The next range to apply (the earliest left)."""
        start, end = self._todo.pop()
        if start == self._failing:
            self._failing, bound = None, 1
        else:
            bound = self._span
        if bound is not None and end - start > bound:
            self._todo.append((start + bound, end))
            end = start + bound
        return start, end

    def committed(self) -> None:
        if self._span is not None:
            self._span *= 2

    def failed(self, start: int, end: int, at: int) -> bool:
        """The handler of event ``at`` of range ``[start, end)`` failed. ``True`` when it is
        the range's first: the caller has the policy hold (or stop at) it, and the range
        is applied again from there; ``False``: the events before it go first."""
        if at > start:
            self._todo += [(at, end), (start, at)]
            self._failing = at
            return False
        while self._todo and self._todo[-1][0] == end:  # the rest, taken apart: rejoined
            end = self._todo.pop()[1]
        self._todo.append((start, end))
        self._span = max(MIN_SPAN, 2 * (at - self._skipped))
        self._skipped = at
        return True

    def refused(self, start: int, end: int) -> None:
        """A write of range ``[start, end)`` was refused: each half apart, down to its
        event. A range of one event cannot be halved: its refused write is that event's
        failure (a :class:`HandlerError`), so a :class:`ValueError` says the caller broke
        that rule (halving it would take an empty range, forever)."""
        if end - start < 2:
            raise ValueError(
                f"a refused write of the range [{start}, {end}) cannot be narrowed down: a "
                "refused write of one event is its HandlerError"
            )
        middle = (start + end) // 2
        self._todo += [(middle, end), (start, middle)]


def apply_in_ranges(
    events: list[Envelope],
    attempt: Callable[[list[Envelope]], _T],
    committed: Callable[[list[Envelope], _T], None],
    *,
    fail: Callable[[HandlerError], None],
    refused: type[Exception],
    failing: int | None = None,
) -> None:
    """Apply ``events`` in :class:`BatchRanges`: ``attempt(batch)`` is one transaction (its
    share of the error policy undone when it raises), ``committed(batch, result)`` follows
    each one committed; ``fail`` (:meth:`ErrorPolicy.fail`) holds a failing event's
    aggregate or raises; ``refused``: what ``attempt`` raises for a refused write of more
    than one event. Outside any ``except``: an error met in a later range does not chain
    the ones before (each skipped event's traceback its own)."""
    ranges = BatchRanges(len(events), failing)
    while ranges:
        start, end = ranges.take()
        batch = events[start:end]
        try:
            result = attempt(batch)
        except HandlerError as failed:
            if ranges.failed(start, end, start + index_of(batch, failed.event)):
                fail(failed)
            continue
        except refused:
            ranges.refused(start, end)
            continue
        ranges.committed()
        committed(batch, result)
