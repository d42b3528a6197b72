"""Retry or skip many parked events of one projection at once (``readmodel parked retry
--projection``), with the same effects as retrying or skipping each by its id.

Work goes by aggregate hold, oldest first: a hold's events are retried together and in
order, as :meth:`ProjectionEngine.retry` retries them; one failing again leaves that hold
parked (its events after the failing one held behind it) and the next hold is tried.
Skipped events stay listed (``--all``): nothing is dropped.

The caller may pass the :class:`Outcome` in: when a store error or Ctrl-C stops the run, it
holds what was done so far, in ``pending`` and ``held`` what was not (still parked), and in
``uncertain`` what the connection was lost at the commit of (done or not, unknown).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from outbox.errors import CommitInterrupted, CommitUncertain, NotParked
from outbox.source_groups import group_of
from projections.engine import ProjectionEngine
from projections.store import AggregateKey, HandlerFailed, ParkedEvent, Store
from projections.store_names import naming

Hold = tuple[str, AggregateKey]
"""A source and an aggregate key (its tenant's, or ``""`` for the hold naming none)."""


@dataclass(frozen=True, slots=True)
class Selection:
    """The parked events of ``projection``, of one source (a group: its members) and one
    event type when given."""

    projection: str
    source: str | None = None
    event_type: str | None = None

    def matches(self, event: ParkedEvent) -> bool:
        if self.source is not None and self.source not in (event.source, group_of(event.source)):
            return False
        return self.event_type is None or event.event_type == self.event_type


@dataclass
class Outcome:
    applied: int = 0
    skipped: int = 0
    still_parked: int = 0
    failed: list[tuple[ParkedEvent, str]] = field(default_factory=list)
    """The event that failed again in each hold that stays parked, and why."""
    pending: dict[Hold, list[ParkedEvent]] = field(default_factory=dict)
    """The chosen events of each hold not retried (a skip: not skipped) yet; after a run
    stopped partway, those left parked, untouched."""
    held: dict[Hold, list[ParkedEvent]] = field(default_factory=dict)
    """A skip: the events held behind the skipped ones in each hold whose skip is done and
    whose retry of them is not yet; after a run stopped partway, those left parked."""
    uncertain: dict[Hold, list[ParkedEvent]] = field(default_factory=dict)
    """After a run stopped partway: the events of the holds whose retry (or skip) the
    connection was lost at the commit of (:class:`CommitUncertain`), or Ctrl-C came at
    (:class:`CommitInterrupted`): done or still parked, unknown."""


@dataclass(frozen=True, slots=True)
class Selected:
    """The chosen events of one store (each store numbers its own), and every event parked
    under their holds (a retry applies them all; a skip then applies those not chosen)."""

    store: Store
    projection: str
    events: list[ParkedEvent]
    held: dict[Hold, list[ParkedEvent]]
    stranded: dict[Hold, ParkedEvent] = field(default_factory=dict)
    """A skip going on where one stopped partway: holds with no chosen event parked, blocked
    from a chosen event it skipped (the value) and the events held behind that (in
    ``held``) not applied yet."""

    @property
    def holds(self) -> dict[Hold, list[ParkedEvent]]:
        return by_hold(self.events)


def select(
    engine: ProjectionEngine, selection: Selection, *, stranded: bool = False
) -> list[Selected]:
    """The parked events chosen, per store that keeps some; ``stranded`` (a skip): and the
    holds a skip of chosen events stopped partway left with events held behind them."""
    found = []
    go_on = stranded and selection.projection in engine.projections
    for store in engine.parking_stores():
        with naming(store):
            parked = store.parked(selection.projection)
        events = [e for e in parked if selection.matches(e)]
        holds = by_hold(events)
        left = _stranded(store, selection, parked, holds) if go_on else {}
        if events or left:
            held = {h: e for h, e in by_hold(parked).items() if h in holds or h in left}
            found.append(Selected(store, selection.projection, events, held, left))
    return found


def _stranded(
    store: Store,
    selection: Selection,
    parked: list[ParkedEvent],
    holds: dict[Hold, list[ParkedEvent]],
) -> dict[Hold, ParkedEvent]:
    """The holds of ``parked`` with no event in ``holds`` that are blocked from a skipped
    event ``selection`` chooses, before their first event parked: a skip stopped before it
    applied the events held behind the events it skipped."""
    first = {hold: events[0].position for hold, events in by_hold(parked).items()}
    since = {
        hold: position
        for hold, position in store.blocked_since(selection.projection).items()
        if hold in first and hold not in holds and position < first[hold]
    }
    if not since:
        return {}
    return {
        (e.source, e.aggregate): e
        for e in store.parked(selection.projection, "skipped")
        if since.get((e.source, e.aggregate)) == e.position and selection.matches(e)
    }


def by_hold(events: Iterable[ParkedEvent]) -> dict[Hold, list[ParkedEvent]]:
    """``events`` grouped by the hold they are parked under, holds by their oldest entry."""
    holds: dict[Hold, list[ParkedEvent]] = {}
    for event in sorted(events, key=lambda e: e.id):
        holds.setdefault((event.source, event.aggregate), []).append(event)
    return holds


def retry(
    engine: ProjectionEngine,
    chosen: list[Selected],
    advance: Callable[[], None] = lambda: None,
    outcome: Outcome | None = None,
) -> Outcome:
    """Retry every hold of ``chosen`` (its parked events all, as a retry by id does);
    ``advance`` is called after each hold."""
    outcome = Outcome() if outcome is None else outcome
    outcome.pending = _chosen_holds(chosen)
    for selected in chosen:
        for hold in selected.holds:
            with _uncertain_if_cut(outcome, hold, outcome.pending, selected.held[hold]):
                _retry_hold(engine, selected.held[hold], outcome)
            del outcome.pending[hold]
            advance()
    outcome.still_parked = _still_parked(chosen)
    return outcome


def skip(
    engine: ProjectionEngine,
    chosen: list[Selected],
    advance: Callable[[], None] = lambda: None,
    outcome: Outcome | None = None,
) -> Outcome:
    """Skip the events of ``chosen`` (one set-based write per store), then retry the events
    of their holds that were not chosen and are held behind them, as a skip by id does.
    For a projection no longer configured only the chosen events are skipped."""
    outcome = Outcome() if outcome is None else outcome
    outcome.pending = _chosen_holds(chosen)
    for selected in chosen:
        outcome.held.update({hold: selected.held[hold] for hold in selected.stranded})
    for selected in chosen:
        ids = {e.id for e in selected.events}
        if ids:
            try:
                outcome.skipped += selected.store.skip_parked_many(sorted(ids))
            except (CommitUncertain, CommitInterrupted):  # skipped or not, unknown
                for hold in selected.holds:
                    outcome.uncertain[hold] = outcome.pending.pop(hold)
                raise
        holds = [*selected.holds, *selected.stranded]
        configured = selected.projection in engine.projections
        for hold in selected.holds:
            del outcome.pending[hold]
            rest = [e for e in selected.held[hold] if e.id not in ids]
            if rest and configured:
                outcome.held[hold] = rest
        if not configured:
            for _ in holds:
                advance()
            continue
        left = by_hold(selected.store.parked(selected.projection))
        for hold in holds:
            if hold in left:
                with _uncertain_if_cut(outcome, hold, outcome.held, left[hold]):
                    _retry_hold(engine, left[hold], outcome)
            outcome.held.pop(hold, None)
            advance()
    outcome.still_parked = _still_parked(chosen)
    return outcome


@contextmanager
def _uncertain_if_cut(
    outcome: Outcome,
    hold: Hold,
    undone: dict[Hold, list[ParkedEvent]],
    events: list[ParkedEvent],
) -> Iterator[None]:
    """A retry of ``hold`` whose commit the connection was lost in (or Ctrl-C stopped) moves
    the hold from ``undone`` to ``outcome.uncertain``: it may be applied, it must not be
    reported as not done."""
    try:
        yield
    except (CommitUncertain, CommitInterrupted):
        outcome.uncertain[hold] = undone.pop(hold, events)
        raise


def _chosen_holds(chosen: list[Selected]) -> dict[Hold, list[ParkedEvent]]:
    return {hold: events for selected in chosen for hold, events in selected.holds.items()}


def _retry_hold(engine: ProjectionEngine, events: list[ParkedEvent], outcome: Outcome) -> None:
    """Retry the hold ``events`` are parked under, from the first of them still parked: one
    another operator settled (skipped, retried) since they were read is not retried, nor
    anything parked under the hold since; none left, nothing is done. A failure names the
    event that failed (its hold's events stay parked: counted until the run ends and
    counts them all)."""
    left = events
    while left:
        try:
            outcome.applied += engine.retry(left[0])
            return
        except NotParked:  # settled meanwhile: the next of them still parked, if any
            later = {e.id for e in left[1:]}
            store = engine.store_of(left[0].projection)
            left = [e for e in store.parked(left[0].projection) if e.id in later]
        except HandlerFailed as failed:
            at = [e for e in left if e.position == failed.event.position]
            outcome.failed.append(((at or left)[0], str(failed)))
            outcome.still_parked += len(left)
            return


def _still_parked(chosen: list[Selected]) -> int:
    """How many events of the holds of ``chosen`` are parked now."""
    count = 0
    for selected in chosen:
        count += sum(
            (e.source, e.aggregate) in selected.held
            for e in selected.store.parked(selected.projection)
        )
    return count
