"""The replay's error policy, shared by the table and document replays: strict handlers
or ``--skip-errors`` (with the aggregates a skipped event holds), and the
:class:`HandlerError` a failing handler raises."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Container, Sequence
from dataclasses import replace
from typing import NamedTuple

import structlog

from outbox.db_errors import hidden_traceback, without_values
from outbox.envelope import Envelope
from projections.replay_types import ReplayError, SkippedEvent
from projections.store import AggregateKey, aggregate_key, hold_of, tenant_holds_of

logger = structlog.get_logger("readmodel.replay")


class HandlerError(Exception):
    """A handler raised (or wrote what the database refuses) during a replay."""

    def __init__(self, event: Envelope, error: BaseException) -> None:
        error = without_values(error)  # shown, logged and parked: no value a database quotes
        super().__init__(repr(error))
        self.event = event
        self.error = error
        handled = sys.exc_info()[1]
        self.detail = hidden_traceback(handled) if handled is not None else None


class Overruled(Exception):
    """The swap's read of the skipped set found events the rebuild skipped (to park them)
    that an operator skipped since: its transaction is rolled back, and they are settled
    outside it (:meth:`ErrorPolicy.overrule`) before it starts again."""


def index_of(events: Sequence[Envelope], event: Envelope) -> int:
    """Where ``event`` (a :class:`HandlerError`'s) is in ``events``: the object itself, not
    the first one equal to it (nor a comparison of each payload on the way)."""
    for at, candidate in enumerate(events):
        if candidate is event:
            return at
    return list(events).index(event)


class PolicyMark(NamedTuple):
    """An :class:`ErrorPolicy`'s state before a transaction (:meth:`ErrorPolicy.mark`)."""

    skipped: int
    """How many events were skipped."""
    rewritten: int
    """How many skipped events' tenants merges had rewritten (undone in reverse)."""
    changes: int
    """How many changes had been made to the holds (undone in reverse: a copy of the holds
    per transaction cost a replay skipping many events time growing with their square)."""


class ErrorPolicy:
    """Strict: a failing event stops the replay (:class:`ReplayError`). With ``skip_errors``
    it is skipped with every later event of its aggregate in its tenant (its earlier ones
    stay applied, as live parking does: :func:`projections.store.hold_of`), and
    :attr:`skipped` lists them for the swap to park. ``in_place``: only the failing event
    is skipped (it stays as the live lanes applied it; nothing is parked)."""

    def __init__(self, projection: str, *, skip_errors: bool, in_place: bool) -> None:
        self.projection = projection
        self.skip_errors = skip_errors
        self.in_place = in_place
        self.held: dict[str, dict[AggregateKey, int]] = {}  # source -> hold -> position
        self.skipped: list[SkippedEvent] = []
        self._rewritten: list[tuple[int, SkippedEvent]] = []  # (index, before) of merges
        self._changes: list[tuple[str, AggregateKey, int | None]] = []  # hold, before
        # Tenants' holds per (source, aggregate type, aggregate id): an event naming no
        # tenant looks for them (a scan of every hold) only where there are some.
        self._tenant_holds: Counter[tuple[str, str, str]] = Counter()
        # In place, the events skipped, and only they: (source, position).
        self._failed: set[tuple[str, int]] = set()

    def mark(self) -> PolicyMark:
        """What the policy holds and has skipped before a transaction, for :meth:`undo` if it
        aborts or starts again: an event naming no tenant merges holds in it
        (:meth:`holds`), which an attempt started again must not meet before that event."""
        return PolicyMark(len(self.skipped), len(self._rewritten), len(self._changes))

    def undo(self, mark: PolicyMark) -> None:
        while len(self._rewritten) > mark.rewritten:
            index, skipped = self._rewritten.pop()
            self.skipped[index] = skipped
        for skipped in self.skipped[mark.skipped :]:
            self._failed.discard((skipped.source, skipped.position))
        del self.skipped[mark.skipped :]
        while len(self._changes) > mark.changes:
            source, key, before = self._changes.pop()
            self._put(source, key, before)

    def fail(self, failed: HandlerError) -> None:
        """Raise :class:`ReplayError`, or hold the event's aggregate (the caller redoes the
        batch, in which :meth:`holds` skips it)."""
        event = failed.event
        if not self.skip_errors:
            raise ReplayError(
                self.projection, event, failed.error, in_place=self.in_place
            ) from failed.error
        key = aggregate_key(event)
        if self.in_place:
            # Only the event: it stays as the live lanes applied it, and so do the later
            # events of its aggregate, which they applied after it: applied again, they
            # bring the aggregate back to its newest state (held, as a rebuild holds them
            # for its swap to park, they left it at its state before the event).
            self._failed.add((event.source, event.position or 0))
            error = f"replay: handler failed: {failed.error!r}"
            self.skipped.append(skipped_event(event, error, failed.detail, key.tenant))
            self._warn_skipped(event, failed)
            return
        held = self.held.setdefault(event.source, {})
        if key.tenant and key._replace(tenant="") in held:
            key = key._replace(tenant="")  # held by it: the hold stays as it is
        elif tenants := self._tenant_holds_of(held, event):
            self._hold(event.source, key, event.position or 0)
            key = self._merge(event.source, held, [*tenants, key])[0]
        else:
            self._hold(event.source, key, event.position or 0)
        self.skipped.append(
            skipped_event(
                event, f"replay: handler failed: {failed.error!r}", failed.detail, key.tenant
            )
        )
        self._warn_skipped(event, failed)

    def _warn_skipped(self, event: Envelope, failed: HandlerError) -> None:
        logger.warning(
            "replay skipped event",
            projection=self.projection,
            source=event.source,
            position=event.position,
            aggregate=f"{event.aggregate_type}:{event.aggregate_id}",
            tenant=event.tenant,
            error=repr(failed.error),
        )

    def ready(
        self, events: Sequence[Envelope], *, undoable: bool
    ) -> tuple[Sequence[Envelope], Sequence[Envelope]]:
        """``(events to go through, events to prefetch)`` of a transaction: events behind a
        skipped one are neither prefetched nor handled. Where failed handlers are undone in
        memory (``undoable``), every event goes through the apply loop, which records the
        holds there (:meth:`holds`), in order with the events it skips."""
        if not self.held and not self._failed:
            return events, events
        mark = self.mark()
        ready = [event for event in events if not self.holds(event)]
        if not undoable:
            return ready, ready
        self.undo(mark)
        return events, ready

    def holds(self, event: Envelope) -> bool:
        """Whether ``event`` is held behind a skipped event of its aggregate (then recorded).
        An event naming no tenant that meets tenants' holds merges them into one naming
        none, as live parking does (:func:`projections.store.tenant_holds_of`). In place,
        only an event that failed is held."""
        if self.in_place:
            return (event.source, event.position or 0) in self._failed
        held = self.held.get(event.source)
        hold = hold_of(held, event) if held else None
        if hold is None and held and (tenants := self._tenant_holds_of(held, event)):
            if (event.position or 0) < min(held[key] for key in tenants):
                return False
            hold = self._merge(event.source, held, tenants)
        if hold is None:
            return False
        key, behind = hold
        if (event.position or 0) < behind:
            return False
        if event.position != behind:  # the failed event itself is recorded by fail()
            reason = (
                f"held: an earlier event of this aggregate was skipped by the replay "
                f"({event.source}:{behind})"
            )
            self.skipped.append(skipped_event(event, reason, None, key.tenant, behind))
        return True

    def overruled(self, skipped: Container[tuple[str, int]]) -> bool:
        """Whether an event this rebuild skipped (failed or held) is among ``skipped``
        (``(source, position)``: events an operator skipped since)."""
        return not self.in_place and any((s.source, s.position) in skipped for s in self.skipped)

    def overrule(
        self, skipped: Container[tuple[str, int]]
    ) -> tuple[set[tuple[str, int]], dict[str, list[int]]]:
        """Forget the events this rebuild skipped that are among ``skipped`` (an operator
        skipped them since: the swap must not park them again), and the holds of those that
        failed: returns ``(those forgotten, positions per source of the events held behind
        them)``, which the caller applies again, in order (the live lanes applied them after
        the skip). A hold merged from several tenants' failures stays while one of its other
        failed events is still skipped (its events stay held). Called outside any
        transaction's :meth:`mark` (what an :meth:`undo` would take back is forgotten)."""
        if self.in_place:
            return set(), {}
        gone = {(s.source, s.position) for s in self.skipped if (s.source, s.position) in skipped}
        if not gone:
            return set(), {}

        def hold(event: SkippedEvent) -> tuple[str, AggregateKey]:
            return event.source, AggregateKey(
                event.tenant, event.aggregate_type, event.aggregate_id
            )

        still = {
            hold(s)
            for s in self.skipped
            if s.held_behind is None and (s.source, s.position) not in gone
        }
        freed = {
            hold(s)
            for s in self.skipped
            if s.held_behind is None and (s.source, s.position) in gone and hold(s) not in still
        }
        for source, key in freed:
            self._hold(source, key, None)
        again: dict[str, list[int]] = {}
        kept = []
        for event in self.skipped:
            if (event.source, event.position) in gone:
                continue
            if event.held_behind is not None and hold(event) in freed:
                again.setdefault(event.source, []).append(event.position)
                continue
            kept.append(event)
        self.skipped[:] = kept
        self._rewritten.clear()
        self._changes.clear()
        return gone, again

    def _tenant_holds_of(
        self, held: dict[AggregateKey, int], event: Envelope
    ) -> list[AggregateKey]:
        if (
            event.tenant
            or not self._tenant_holds[(event.source, event.aggregate_type, event.aggregate_id)]
        ):
            return []
        return tenant_holds_of(held, event)

    def _hold(self, source: str, key: AggregateKey, position: int | None) -> None:
        """Hold ``key`` from ``position`` on (``None``: no longer), for :meth:`undo`."""
        self._changes.append((source, key, self.held.get(source, {}).get(key)))
        self._put(source, key, position)

    def _put(self, source: str, key: AggregateKey, position: int | None) -> None:
        held = self.held.setdefault(source, {})
        had = key in held
        if position is None:
            held.pop(key, None)
        else:
            held[key] = position
        if key.tenant and had != (position is not None):
            self._tenant_holds[(source, key.aggregate_type, key.aggregate_id)] += -1 if had else 1

    def _merge(
        self, source: str, held: dict[AggregateKey, int], keys: list[AggregateKey]
    ) -> tuple[AggregateKey, int]:
        """One hold naming no tenant, from the earliest of ``keys``, in their place; the events
        skipped under them are skipped under it."""
        behind = min(held[key] for key in keys)
        for key in keys:
            self._hold(source, key, None)
        key = keys[0]._replace(tenant="")
        self._hold(source, key, behind)
        for index, skipped in enumerate(self.skipped):
            if (skipped.source, skipped.aggregate_type, skipped.aggregate_id) == (
                source,
                key.aggregate_type,
                key.aggregate_id,
            ):
                self._rewritten.append((index, skipped))
                self.skipped[index] = replace(skipped, tenant="")
        return key, behind


def skipped_event(
    event: Envelope, error: str, detail: str | None, tenant: str, behind: int | None = None
) -> SkippedEvent:
    return SkippedEvent(
        event.source,
        event.position or 0,
        event.event_id,
        event.event_type,
        event.aggregate_type,
        event.aggregate_id,
        error,
        detail,
        behind,
        tenant,
        event.tenant or None,
    )
