"""Retry or skip many parked events of one projection at once (``readmodel parked retry
--projection``), with the same effects as retrying or skipping each by its id.

Work goes by aggregate hold, oldest first: a hold's events are retried together and in
order, as :meth:`ProjectionEngine.retry` retries them; one failing again leaves that hold
parked (its events after the failing one held behind it) and the next hold is tried.
Skipped events stay listed (``--all``): nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from outbox.source_groups import group_of
from projections.engine import ProjectionEngine
from projections.store import AggregateKey, HandlerFailed, ParkedEvent, Store

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


@dataclass(frozen=True, slots=True)
class Selected:
    """The chosen events of one store (each store numbers its own), and every event parked
    under their holds (a retry applies them all; a skip then applies those not chosen)."""

    store: Store
    events: list[ParkedEvent]
    held: dict[Hold, list[ParkedEvent]]

    @property
    def holds(self) -> dict[Hold, list[ParkedEvent]]:
        return by_hold(self.events)


def select(engine: ProjectionEngine, selection: Selection) -> list[Selected]:
    """The parked events chosen, per store that keeps some."""
    found = []
    for store in engine.parking_stores():
        parked = store.parked(selection.projection)
        events = [e for e in parked if selection.matches(e)]
        if events:
            holds = by_hold(events)
            held = {h: e for h, e in by_hold(parked).items() if h in holds}
            found.append(Selected(store, events, held))
    return found


def by_hold(events: Iterable[ParkedEvent]) -> dict[Hold, list[ParkedEvent]]:
    """``events`` grouped by the hold they are parked under, holds by their oldest entry."""
    holds: dict[Hold, list[ParkedEvent]] = {}
    for event in sorted(events, key=lambda e: e.id):
        holds.setdefault((event.source, event.aggregate), []).append(event)
    return holds


def retry(
    engine: ProjectionEngine, chosen: list[Selected], advance: Callable[[], None] = lambda: None
) -> Outcome:
    """Retry every hold of ``chosen`` (its parked events all, as a retry by id does);
    ``advance`` is called after each hold."""
    outcome = Outcome()
    for selected in chosen:
        for hold in selected.holds:
            _retry_hold(engine, selected.held[hold], outcome)
            advance()
    outcome.still_parked = _still_parked(chosen)
    return outcome


def skip(
    engine: ProjectionEngine, chosen: list[Selected], advance: Callable[[], None] = lambda: None
) -> Outcome:
    """Skip the events of ``chosen`` (one set-based write per store), then retry the events
    of their holds that were not chosen and are held behind them, as a skip by id does.
    For a projection no longer configured only the chosen events are skipped."""
    outcome = Outcome()
    for selected in chosen:
        outcome.skipped += selected.store.skip_parked_many([e.id for e in selected.events])
        projection = selected.events[0].projection
        holds = selected.holds
        if projection not in engine.projections:
            for _ in holds:
                advance()
            continue
        left = by_hold(selected.store.parked(projection))
        for hold in holds:
            if hold in left:
                _retry_hold(engine, left[hold], outcome)
            advance()
    outcome.still_parked = _still_parked(chosen)
    return outcome


def _retry_hold(engine: ProjectionEngine, events: list[ParkedEvent], outcome: Outcome) -> None:
    """Retry the hold ``events`` are parked under; a failure names the event that failed."""
    try:
        outcome.applied += engine.retry(events[0])
    except HandlerFailed as failed:
        at = [e for e in events if e.position == failed.event.position]
        outcome.failed.append(((at or events)[0], str(failed)))


def _still_parked(chosen: list[Selected]) -> int:
    """How many events of the holds of ``chosen`` are parked now."""
    count = 0
    for selected in chosen:
        count += sum(
            (e.source, e.aggregate) in selected.held
            for e in selected.store.parked(selected.events[0].projection)
        )
    return count
