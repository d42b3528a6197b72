"""What a replay is asked, plans and reports: its options, plan, summary, hooks and errors.

Kept apart from :mod:`projections.replay` so that the CLI and tests can name them without
the machinery; ``projections.replay`` re-exports every name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from outbox.envelope import Envelope
from outbox.errors import ReadmodelError

BLUE_GREEN = "blue-green"
IN_PLACE = "in-place"


class ReplayRefused(ReadmodelError):
    """The replay was asked for something it does not do (a usage error)."""


class ReplayLocked(ReadmodelError):
    """Another replay of the same projection is running."""


class ReplayError(ReadmodelError):
    """A handler failed during a replay; carries the event."""

    def __init__(
        self, projection: str, event: Envelope, error: BaseException, *, in_place: bool
    ) -> None:
        kept = "earlier batches stay applied" if in_place else "the live model is as it was"
        super().__init__(
            f"{projection}: replay stopped at {event.source}:{event.position} "
            f"({event.event_type} of {event.aggregate_type}:{event.aggregate_id}): {error!r}; "
            f"{kept} (--skip-errors skips such events)"
        )
        self.event = event
        self.error = error


@dataclass(frozen=True)
class ReplayOptions:
    from_position: int | None = None
    source: str | None = None
    tenant: str | None = None
    skip_errors: bool = False
    apply_skipped: bool = False
    """Apply again the events an operator skipped (``readmodel parked skip``), which a
    replay otherwise leaves out (:mod:`projections.replay_skipped`); a rebuild only."""

    @property
    def mode(self) -> str:
        return BLUE_GREEN if self.from_position is None else IN_PLACE


@dataclass(frozen=True)
class SourcePlan:
    source: str
    after: int
    head: int
    events: int


@dataclass(frozen=True)
class ReplayPlan:
    projection: str
    mode: str
    sources: list[SourcePlan]
    tables: list[tuple[str, str]]  # (live table, table written: its shadow, or itself in place)
    leftovers: list[str]
    tenant: str | None = None
    unit: str = "table"  # what a projection keeps: "table", or "collection" (documents)
    warnings: list[str] = field(default_factory=list)
    carried: list[str] = field(default_factory=list)  # what the swap carries, one per object
    skipped_by_operator: int = 0  # events it will leave out: ``readmodel parked skip``

    @property
    def events(self) -> int:
        return sum(s.events for s in self.sources)


@dataclass(frozen=True)
class SkippedEvent:
    source: str
    position: int
    event_id: str
    event_type: str
    aggregate_type: str
    aggregate_id: str
    error: str
    detail: str | None
    held_behind: int | None = None  # the position of the failed event it was held behind
    tenant: str = ""
    """The tenant of the hold it is parked under ("" for none): the failed event's tenant."""
    event_tenant: str | None = None
    """The event's own tenant (``None`` for none): a hold merged to name no tenant holds
    events of several tenants."""

    @property
    def aggregate(self) -> str:
        return f"{self.aggregate_type}:{self.aggregate_id}"


@dataclass
class ReplaySummary:
    projection: str
    mode: str
    applied: dict[str, int] = field(default_factory=dict)
    skipped: list[SkippedEvent] = field(default_factory=list)
    checkpoints: dict[str, int] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)
    released_parked: int = 0
    skipped_by_operator: int = 0
    """Events the replay left out: an operator skipped them (``readmodel parked skip``);
    with ``apply_skipped`` and ``skip_errors``, those whose handler still failed (they stay
    skipped); and those a rebuild skipped (``skip_errors``) that an operator skipped while
    it ran."""
    skipped_by_operator_failed: int = 0
    """Of :attr:`skipped_by_operator`, those whose handler failed in this replay (applied
    again and still failing, or failed before an operator skipped them while it ran); not
    those it only held behind a failure."""
    seconds: float = 0.0
    left_behind: list[str] = field(default_factory=list)
    """Old tables the swap replaced that could not be dropped after it (emptied, for the
    next replay or ``--cleanup`` to drop), and why (:mod:`projections.shadow_drop`)."""
    left_because: str | None = None

    @property
    def events(self) -> int:
        return sum(self.applied.values())

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class ReplayHooks:
    """No-op extension points (progress bars, tests)."""

    def started(self, plan: ReplayPlan) -> None: ...

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        """After each committed batch, and in a rebuild's long transactions after each part
        read from the log: ``applied`` of about ``total`` events so far (less again after a
        transaction rolled back: its events are applied and counted again); ``position``:
        the furthest of ``source`` reached, never less than one given before. Then the
        transaction is open: a hook that writes to a SQLite store's database would wait
        for it (the CLI's only draws)."""

    def before_swap(self) -> None: ...


def not_unmarked(name: str, what: str, found: Sequence[str]) -> ReplayRefused:
    """The refusal of ``--drop-unmarked NAME`` naming none of ``found`` (``what`` they are)."""
    those = f" (those: {', '.join(found)})" if found else " (there is none)"
    return ReplayRefused(f"--drop-unmarked {name}: not {what}{those}; nothing was dropped")
