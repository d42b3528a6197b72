"""The read-model store interface: apply a batch and its checkpoint in one commit.

A store keeps, beside the read models, its own checkpoints (per projection,
source and partition), the aggregates blocked by a parked event, the parked
events themselves and handler failure counts, so that a batch's effects,
its checkpoint and any parking commit or roll back together.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from outbox.envelope import Envelope
from outbox.parking import PurgeProgress
from projections.api import Projection, UnstorableValueError

_Hold = TypeVar("_Hold")

# (after, target, limit) -> events of one partition with after < position <= target, in order
EventLoader = Callable[[int, int, int], Sequence[Envelope]]


@dataclass(frozen=True, slots=True)
class Lane:
    """One ordered lane of work: a projection's events of one source and partition."""

    projection: str
    source: str
    partition: int


class AggregateKey(NamedTuple):
    """An aggregate as a hold names it (beside its projection and source): the tenant of the
    event that failed, ``""`` for none, then its type and id. Tenants of one shared source
    number their aggregates alike (each has an ``order 1``): a hold of one tenant's aggregate
    holds none of another's. A hold without a tenant holds the aggregate in every tenant (see
    :func:`hold_of`)."""

    tenant: str
    aggregate_type: str
    aggregate_id: str


def aggregate_key(event: Any) -> AggregateKey:
    """The key of ``event``'s own aggregate (an envelope, or anything with ``tenant``,
    ``aggregate_type`` and ``aggregate_id``)."""
    return AggregateKey(event.tenant or "", event.aggregate_type, event.aggregate_id)


def hold_of(held: Mapping[AggregateKey, _Hold], event: Any) -> tuple[AggregateKey, _Hold] | None:
    """The hold ``event`` waits behind, with its key, or ``None``: its tenant's hold of its
    aggregate, else a hold of the aggregate naming no tenant. A hold without a tenant holds
    the aggregate of every tenant: its failed event named none (which tenant's aggregate it
    is, is not known, so order goes first), or it was written before holds had tenants
    (migration 0004, a MongoDB document without ``tenant``) and keeps holding what it held."""
    key = aggregate_key(event)
    found = held.get(key)
    if found is not None:
        return key, found
    if key.tenant:
        untenanted = key._replace(tenant="")
        found = held.get(untenanted)
        if found is not None:
            return untenanted, found
    return None


def tenant_holds_of(held: Mapping[AggregateKey, Any], event: Any) -> list[AggregateKey]:
    """The tenants' holds an event naming no tenant meets on its aggregate (which tenant's
    aggregate it is, is not known): it must wait behind all of them, merged into one hold
    naming no tenant (:func:`merge_holds`). Empty for an event with a tenant, or when
    :func:`hold_of` finds its hold. Per aggregate there are either tenants' holds only, or
    one hold naming no tenant, which holds every tenant's events."""
    if event.tenant or not held:
        return []
    return [
        key
        for key in held
        if key.tenant
        and key.aggregate_id == event.aggregate_id
        and key.aggregate_type == event.aggregate_type
    ]


def unheld(held: Mapping[AggregateKey, Any], events: Sequence[Envelope]) -> Sequence[Envelope]:
    """The events of a live batch that no hold in ``held`` will hold, in order: what the
    projection's ``prefetch`` hook is given (a key of a held event may be one its store
    refuses, which would fail the events that are applied). Besides :func:`hold_of`'s holds,
    an event naming no tenant that meets tenants' holds merges them into one holding its
    aggregate in every tenant (:func:`tenant_holds_of`): it and the aggregate's later events
    are held too."""
    if not held:
        return events
    merged: set[tuple[str, str]] = set()
    ready = []
    for event in events:
        aggregate = (event.aggregate_type, event.aggregate_id)
        if hold_of(held, event) is not None or aggregate in merged:
            continue
        if tenant_holds_of(held, event):
            merged.add(aggregate)
            continue
        ready.append(event)
    return ready


def is_held(held: Mapping[AggregateKey, Mapping[str, Any]], event: Any) -> bool:
    """Whether a hold in ``held`` (rows or documents with ``since_position``) holds
    ``event``: its own, or any of its aggregate's when it names no tenant, from the hold's
    position on. An earlier event of a held aggregate was applied before the hold began,
    so an in-place replay applies it again like any other."""
    position = event.position or 0
    found = hold_of(held, event)
    if found is not None:
        return position >= found[1]["since_position"]
    tenants = tenant_holds_of(held, event)
    return bool(tenants) and position >= min(held[key]["since_position"] for key in tenants)


def merge_holds(
    held: dict[AggregateKey, dict[str, Any]], keys: Sequence[AggregateKey]
) -> tuple[AggregateKey, dict[str, Any]]:
    """Replace the holds ``keys`` (rows or documents with ``since_position``) in ``held`` by
    one naming no tenant that keeps the earliest one's position, reason and attempts;
    returns it with its key. The stores write the same (and park the held events under it)."""
    earliest = min((held.pop(key) for key in keys), key=lambda hold: hold["since_position"])
    key = keys[0]._replace(tenant="")
    merged = {**earliest, "tenant": ""}
    held[key] = merged
    return key, merged


def untenant_entries(entries: list[ParkedEntry], key: AggregateKey) -> list[ParkedEntry]:
    """``entries`` with those of ``key``'s aggregate parked under its hold naming no tenant."""
    return [
        entry._replace(tenant="")
        if (entry.event.aggregate_type, entry.event.aggregate_id)
        == (key.aggregate_type, key.aggregate_id)
        else entry
        for entry in entries
    ]


class ParkedEntry(NamedTuple):
    """One event to park, with why, under the hold of ``tenant`` (the tenant of its
    aggregate's hold, ``""`` for none)."""

    event: Any  # an Envelope, or a replay's SkippedEvent
    reason: str
    detail: str | None
    attempts: int
    tenant: str


def held_entry(lane: Lane, event: Any, hold: Mapping[str, Any]) -> ParkedEntry:
    """The parked entry of an event of a blocked aggregate, under that hold (a row or
    document with ``since_position``, ``reason``, ``detail``, ``attempts`` and ``tenant``):
    the blocking event keeps its reason and attempts; later ones say what they wait behind."""
    tenant = hold.get("tenant") or ""
    if event.position == hold["since_position"]:
        return ParkedEntry(event, hold["reason"], hold["detail"], int(hold["attempts"]), tenant)
    reason = (
        f"held: an earlier event of this aggregate is parked "
        f"({lane.source}:{hold['since_position']})"
    )
    return ParkedEntry(event, reason, None, 0, tenant)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What :meth:`Store.apply_batch` did; ``checkpoint`` is the lane's position afterwards."""

    applied: int
    parked: int
    checkpoint: int
    noop: bool = False
    invalidation: Invalidation | None = None
    target: int | None = None
    """The target the batch worked towards (the log head it read, when called without one)."""


@dataclass(frozen=True, slots=True)
class Invalidation:
    """Cache tags a committed batch invalidates: row ``id`` of the store's journal
    (``rm_invalidations``), deleted once the cache has been told."""

    id: int
    projection: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    id: int
    projection: str
    source: str
    position: int
    event_id: str
    aggregate_type: str
    aggregate_id: str
    event_type: str
    reason: str
    detail: str | None
    attempts: int
    status: str
    parked_at: datetime
    resolved_at: datetime | None
    tenant: str = ""
    """The tenant of the aggregate hold it is parked under, ``""`` for none (the hold then
    holds the aggregate of every tenant); a retry or skip acts on that hold's events only."""

    @property
    def aggregate(self) -> AggregateKey:
        return AggregateKey(self.tenant, self.aggregate_type, self.aggregate_id)

    def as_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__slots__}
        data["tenant"] = self.tenant or None
        data["parked_at"] = self.parked_at.isoformat()
        data["resolved_at"] = self.resolved_at.isoformat() if self.resolved_at else None
        return data


class HandlerFailed(Exception):
    """A handler raised; the batch was rolled back. Carries the event that failed.

    ``refused``: the store refused what the handler gave it (a write, or a lookup made
    through the Tx), not the handler's own failure (its own code or connections); only
    such a refusal may be refused for good (:meth:`Store.refused_for_good`)."""

    def __init__(
        self, event: Envelope, error: BaseException, detail: str, *, refused: bool = False
    ) -> None:
        super().__init__(f"{event.event_type} at {event.source}:{event.position}: {error!r}")
        self.event = event
        self.error = error
        self.detail = detail
        self.refused = refused

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (Dramatiq, multiprocessing) with what the constructor needs: the default
        # would call it with the message alone.
        return (_handler_failed, (self.event, self.error, self.detail, self.refused))


def _handler_failed(
    event: Envelope, error: BaseException, detail: str, refused: bool
) -> HandlerFailed:
    return HandlerFailed(event, error, detail, refused=refused)


class WritesRefused(Exception):
    """The database refused a batch's writes for what they hold (a NULL in a NOT NULL
    column, a value too long, a type it cannot take): the same writes fail again, so one of
    the batch's events is poison. The engine applies the events up to ``upto`` one by one,
    where such a refusal is that event's :class:`HandlerFailed`."""

    def __init__(self, upto: int, error: BaseException) -> None:
        super().__init__(f"writes refused up to position {upto}: {error!r}")
        self.upto = upto
        self.error = error


def new_cache_tags(invalidated: set[str], tags: tuple[Any, ...]) -> list[str]:
    """Those of ``tags`` a transaction's ``invalidated`` lacks. A tag that is not a string is
    refused here (``TypeError``): its handler fails and its event is parked, not the batch
    after it when the tags are journaled."""
    for tag in tags:
        if not isinstance(tag, str):
            raise TypeError(f"cache tags are strings, got {tag!r}")
    return [tag for tag in dict.fromkeys(tags) if tag not in invalidated]


def add_cache_tags(projection: Projection, event: Envelope, tags: set[str]) -> None:
    """Add the cache tags applying ``event`` invalidates to ``tags`` (stores' apply paths)."""
    for tag in projection.cache_tags(event):
        if not isinstance(tag, str):
            raise TypeError(f"cache_tags() returned {tag!r}: cache tags are strings")
        tags.add(tag)


class Store(ABC):
    """Where read models live. ``apply_batch`` owns the transaction; backends fill hooks."""

    reads_log_head = False
    """Whether :meth:`apply_batch` accepts ``target=None``: the store then reads the source's
    log head itself, in the round trip that opens the lane (the log is in its database)."""

    def share_log(self, log_engine: Any) -> bool:
        """Told the log's SQLAlchemy engine; returns (and keeps) :attr:`reads_log_head`."""
        return self.reads_log_head

    @abstractmethod
    def create_tables(self, projections: Sequence[Projection]) -> None:
        """Create every projection's tables when missing. The store's own tables (checkpoints,
        parked events) come from migrations (``readmodel migrate``, outbox/migrate.py)."""

    @abstractmethod
    def apply_batch(
        self,
        projection: Projection,
        lane: Lane,
        target: int | None,
        load: EventLoader,
        limit: int,
    ) -> BatchResult:
        """Apply the lane's next events up to ``target`` (at most ``limit``) and move its
        checkpoint, in one transaction. A lane already at or past ``target`` is a no-op.
        ``target=None`` (only when :attr:`reads_log_head`) means the log head now.
        Raises :class:`HandlerFailed` (after rolling back) when a handler raises."""

    @abstractmethod
    def checkpoint(self, lane: Lane) -> int:
        """The lane's position: every event of the lane up to it has been applied."""

    @abstractmethod
    def checkpoints(self, projection: str) -> dict[tuple[str, int], int]:
        """``{(source, partition): position}`` for one projection."""

    @abstractmethod
    def record_failure(self, lane: Lane, event: Envelope, error: str) -> int:
        """Count one more failed attempt at ``event``; returns the attempts so far."""

    @abstractmethod
    def failing(
        self,
        projection: str,
        source: str | None = None,
        after: int | None = None,
        upto: int | None = None,
    ) -> list[dict[str, Any]]:
        """Events whose handler failed and that are not parked yet, by position (of
        ``source``, in ``(after, upto]`` when given): ``source``, ``position``,
        ``attempts``, ``last_error``, ``updated_at``."""

    def refused_for_good(self, error: BaseException) -> bool:
        """Whether ``error`` (of a :class:`HandlerFailed` with ``refused`` set: the store's
        refusal, never a handler's own exception) refuses a value the handler wrote or looked
        up, alike on every attempt: its event is parked at once instead of retried. Every
        :class:`UnstorableValueError` is (:class:`WideIntegerError` too). A lock, a connection
        or a conflict with another writer is not."""
        return isinstance(error, UnstorableValueError)

    @abstractmethod
    def block(self, lane: Lane, event: Envelope, reason: str, detail: str, attempts: int) -> bool:
        """Park ``event`` and hold every later event of its aggregate until retried or skipped;
        ``False`` (nothing held) when the lane is past the event already: a rebuild swapped in
        meanwhile has applied it."""

    @abstractmethod
    def parked(
        self, projection: str | None = None, status: str | None = "parked"
    ) -> list[ParkedEvent]:
        """Parked events, oldest first."""

    @abstractmethod
    def retry_parked(
        self,
        projection: Projection,
        lane: Lane,
        aggregate: AggregateKey,
        load: Callable[[list[int]], Sequence[Envelope]],
        entry_id: int | None = None,
    ) -> int:
        """Apply the events parked under the hold of ``aggregate`` (a tenant's, or the one
        naming no tenant) in order and release it; returns how many.

        ``load`` fetches events of the lane's source by position. Raises
        :class:`HandlerFailed` (and leaves everything parked) if a handler fails again.
        ``entry_id`` (a retry by id): that entry must still be parked when the retry holds
        the lane, read under a lock a skip of it waits for (or conflicts with); otherwise
        :class:`~outbox.errors.NotParked` with its status, and nothing is done.
        """

    @abstractmethod
    def skip_parked(self, entry_id: int) -> ParkedEvent | None:
        """Mark one parked event skipped; release its aggregate when nothing else is parked."""

    def skip_parked_many(self, entry_ids: Sequence[int]) -> int:
        """:meth:`skip_parked` for many events (a backend does it set-based); returns how
        many were parked and are now skipped."""
        return sum(self.skip_parked(entry_id) is not None for entry_id in entry_ids)

    def purge_skipped(self, entry_ids: Sequence[int], progress: PurgeProgress | None = None) -> int:
        """Delete those of ``entry_ids`` that are skipped (never one of another status);
        returns how many were deleted, and counts in ``progress`` what each commit did (an
        error stopping the purge partway leaves there what it had done)."""
        raise NotImplementedError(f"{type(self).__name__} cannot purge parked events")

    @abstractmethod
    def blocked_since(self, projection: str) -> dict[tuple[str, AggregateKey], int]:
        """The position each aggregate hold of ``projection`` is blocked from, by source and
        key: its first event parked, or one skipped since whose events held behind it were
        not applied yet (a skip stopped partway)."""

    def stuck_journal(self) -> Path | None:
        """The file where a dying worker keeps the stuck attempts it could not count here in
        time (:mod:`projections.stuck_journal`), or ``None``: this store is not locked by
        the stuck batch itself, or not local to the machine (a server)."""
        return None

    journal_invalidations: bool = False
    """Set by the engine when a cache is attached: batches then record their cache tags."""

    def pending_invalidations(
        self, older_than: float = 0.0, limit: int = 1000
    ) -> list[Invalidation]:
        """Recorded invalidations not yet done, oldest first (at least ``older_than`` s old)."""
        return []

    def forget_invalidations(self, ids: Sequence[int]) -> None:
        """Delete journal rows whose invalidation the cache has done."""
        return None

    def journal_invalidation(self, projection: str, tags: Sequence[str]) -> Invalidation | None:
        """Record an invalidation on its own, before the change it covers (write-ahead);
        ``None`` when this store keeps no journal."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
