"""What the table and document replays share: checking the options, strict handlers or
``--skip-errors`` (with the aggregates a skipped event holds), and counting the events a
replay will read."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
import structlog

from outbox.db_errors import hidden_traceback, without_values
from outbox.envelope import Envelope
from outbox.schema import event_log
from outbox.source_groups import group_of
from projections import invalidations
from projections.api import Projection
from projections.invalidations import WHOLE_PROJECTION
from projections.log_reader import LogReader
from projections.log_stream import collect_batch, stream_batches
from projections.replay_skipped import OperatorSkips
from projections.replay_types import (
    BLUE_GREEN,
    IN_PLACE,
    ReplayError,
    ReplayHooks,
    ReplayOptions,
    ReplayRefused,
    ReplaySummary,
    SkippedEvent,
)
from projections.store import (
    AggregateKey,
    Invalidation,
    aggregate_key,
    hold_of,
    tenant_holds_of,
)

logger = structlog.get_logger("readmodel.replay")


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
    _policy: ErrorPolicy
    _skips: OperatorSkips | None = None
    swapped: bool = False
    """Whether this replayer's last rebuild committed its swap: interrupted after it (while
    the old tables or generation are dropped), the rebuilt model is the live one."""

    def _finished(self, summary: ReplaySummary, started: float) -> ReplaySummary:
        """``summary`` completed with the skipped events and the time since ``started``."""
        summary.skipped = list(self._policy.skipped)
        summary.skipped_by_operator = len(self._skips.left_out) if self._skips else 0
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

    def _report(self, source: str, position: int, applied: int) -> None:
        collect_batch()
        self._applied += applied
        self._total = max(self._total, self._applied)
        self.hooks.progress(source, position, self._applied, self._total)

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


def chase_checkpoints(after: int, furthest: Callable[[], int]) -> Iterator[tuple[int, int]]:
    """The ranges ``(from, to]`` an in-place replay re-applies: up to the lanes' furthest
    checkpoint (``furthest()``), then on from there as long as live batches moved it
    meanwhile. Each batch re-applies, under the lanes' locks, the events up to their
    checkpoints; an aggregate whose newer events were applied live before the replay
    re-applied an older one is set back by it, and put right only when the replay goes on
    to re-apply those newer events too. It stops once a range reached a checkpoint read
    after its last batch, so every event up to the checkpoints was re-applied after every
    older one."""
    done = after
    while True:
        target = furthest()
        if target <= done:
            return
        yield done, target
        done = target


def furthest_checkpoint(store: Any, projection: Projection, source: str) -> Callable[[], int]:
    """Reads the furthest checkpoint of ``projection``'s lanes of ``source`` in ``store``."""

    def furthest() -> int:
        done = store.checkpoints(projection.name)
        return max([done.get((source, p), 0) for p in range(projection.partitions)] + [0])

    return furthest


def check_options(
    projection: Projection, options: ReplayOptions, heads: Mapping[str, int]
) -> list[str]:
    """The sources to replay (a group's member sources found in the log ``heads``); raises
    :class:`ReplayRefused` for options that do not fit."""
    name = projection.name
    if options.mode == IN_PLACE and options.apply_skipped:
        raise ReplayRefused(
            "--apply-skipped goes with a blue/green rebuild: in place, the events an "
            "operator skipped stay left out (the live lanes never applied them)"
        )
    if options.mode == BLUE_GREEN and (options.source or options.tenant):
        raise ReplayRefused(
            "--source and --tenant replay part of the log in place; a blue/green rebuild "
            "needs every event: add --from-position N (0 for the whole log) on a "
            "replay-safe projection, or drop them"
        )
    if options.mode == IN_PLACE and not projection.replay_safe:
        raise ReplayRefused(
            f"projection {name!r} is not replay-safe: replaying a range in place would "
            f"apply events twice. Rebuild it blue/green (no --from-position), or declare "
            f"replay_safe = True if applying an event again changes nothing"
        )
    sources = projection.lane_sources(heads)
    if options.source is None:
        return _within_heads(name, options, sources, heads)
    # A group stands for its member sources; a member not in the log yet for itself.
    chosen = [s for s in sources if options.source in (s, group_of(s))]
    if not chosen and projection.reads(options.source):
        chosen = [options.source]
    if not chosen:
        known = ", ".join(sorted({*projection.sources, *sources})) or "none"
        raise ReplayRefused(
            f"projection {name!r} does not subscribe to source {options.source!r} "
            f"(its sources: {known})"
        )
    return _within_heads(name, options, chosen, heads)


def _within_heads(
    name: str, options: ReplayOptions, sources: list[str], heads: Mapping[str, int]
) -> list[str]:
    """``sources``, unless ``--from-position`` is past the log head of every one of them:
    no event lies there (a mistyped position, another source's, one of a log restored from an
    older backup), and replaying nothing would end as if the model had been repaired."""
    after = options.from_position
    if after is None or not sources or any(after <= heads.get(s, 0) for s in sources):
        return sources
    at = ", ".join(f"{s} {heads.get(s, 0)}" for s in sources)
    raise ReplayRefused(
        f"--from-position {after} is past the log head of every source {name!r} replays "
        f"({at}): nothing lies after it (positions are per source; --dry-run shows each log head)"
    )


class HandlerError(Exception):
    """A handler raised (or wrote what the database refuses) during a replay."""

    def __init__(self, event: Envelope, error: BaseException) -> None:
        error = without_values(error)  # shown, logged and parked: no value a database quotes
        super().__init__(repr(error))
        self.event = event
        self.error = error
        handled = sys.exc_info()[1]
        self.detail = hidden_traceback(handled) if handled is not None else None


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


def count_events(
    log_engine: sa.Engine,
    source: str,
    after: int,
    upto: int,
    types: list[str],
    tenant: str | None = None,
) -> int:
    """How many events of ``types`` of ``source`` (and ``tenant``) lie in ``(after, upto]``."""
    c = event_log.c
    query = sa.select(sa.func.count()).where(
        c.source == source, c.position > after, c.position <= upto, c.event_type.in_(types)
    )
    if tenant is not None:
        query = query.where(c.tenant == tenant)
    with log_engine.connect() as conn:
        return int(conn.execute(query).scalar_one())
