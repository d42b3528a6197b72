"""What :class:`projections.engine.ProjectionEngine` does with parked events: list them, retry
an aggregate's hold, skip one (then apply those held behind it), and refuse an entry that is
no longer parked (:class:`NotParked`, nothing done)."""

from __future__ import annotations

from collections.abc import Mapping

from outbox.envelope import aggregate_hash
from outbox.errors import NotParked, ReadmodelError
from projections.api import Projection
from projections.log_reader import LogReader
from projections.store import Lane, ParkedEvent, Store
from projections.store_names import naming


class ParkedOperations:
    """The engine's operations on parked events (a mixin of
    :class:`projections.engine.ProjectionEngine`, which provides the stubs below)."""

    reader: LogReader
    projections: Mapping[str, Projection]

    def projection(self, name: str) -> Projection:
        raise NotImplementedError

    def store_of(self, projection: Projection | str) -> Store:
        raise NotImplementedError

    def redo_invalidations(self, older_than: float = 0.0) -> int:
        raise NotImplementedError

    def _distinct_stores(self) -> list[Store]:
        raise NotImplementedError

    def parked(
        self, projection: str | None = None, status: str | None = "parked"
    ) -> list[ParkedEvent]:
        out: list[ParkedEvent] = []
        for store in self._distinct_stores():
            with naming(store):
                out.extend(store.parked(projection, status))
        return out

    def removed(self, name: str) -> bool:
        """True when ``name`` is not configured but a store still keeps its parked events or
        checkpoints: a projection removed from the configuration."""
        if name in self.projections:
            return False
        return any(_keeps(store, name) for store in self._distinct_stores())

    def removed_with_parked(self) -> list[str]:
        """The projections no longer configured that have events parked in a store."""
        return sorted({e.projection for e in self.parked()} - set(self.projections))

    def retry(self, entry: ParkedEvent) -> int:
        """Re-apply the parked events of ``entry``'s aggregate hold (its tenant's, or the one
        naming no tenant), in order, and release it; other tenants' holds stay.

        Only while ``entry`` itself is parked: one skipped, retried or replayed (when read,
        or by the time the retry holds its lane) raises :class:`NotParked` and nothing is
        retried, even if later events of its aggregate are parked (they have ids of their
        own, which a retry names)."""
        if entry.projection not in self.projections:
            raise ReadmodelError(no_handler(entry.projection))
        if entry.status != "parked":
            raise _not_parked(entry, "retried")
        store = self.store_of(entry.projection)
        try:
            return self.retry_hold(entry, entry_id=entry.id)
        except NotParked:
            with naming(store):
                raise _no_longer_parked(store, entry, "retried") from None

    def retry_hold(self, entry: ParkedEvent, *, entry_id: int | None = None) -> int:
        """Re-apply whatever is parked under ``entry``'s aggregate hold now, whatever
        ``entry``'s own status (the events held behind a skipped one); with ``entry_id``,
        only while that entry is parked (:meth:`Store.retry_parked`)."""
        if entry.projection not in self.projections:
            raise ReadmodelError(no_handler(entry.projection))
        projection = self.projection(entry.projection)
        store = self.store_of(projection)
        partition = aggregate_hash(entry.aggregate_type, entry.aggregate_id) % projection.partitions
        lane = Lane(projection.name, entry.source, partition)
        with naming(store):
            applied = store.retry_parked(
                projection,
                lane,
                entry.aggregate,
                lambda positions: self.reader.at_positions(entry.source, positions),
                entry_id,
            )
        self.redo_invalidations()
        return applied

    def skip(self, entry: ParkedEvent) -> int:
        """Skip one parked event, then apply the aggregate's remaining parked events in order
        (they were held behind it). Returns how many were applied; if one fails again, it and
        the rest stay parked (:class:`HandlerFailed`). For a projection no longer configured
        only ``entry`` is skipped: no handler can apply the events held behind it.

        Only while ``entry`` is parked, as :meth:`retry`: one settled (when read, or by the
        time the skip holds it) raises :class:`NotParked` and nothing is skipped."""
        if entry.status != "parked":
            raise _not_parked(entry, "skipped")
        if entry.projection not in self.projections:
            holder = self._holder(entry)
            with naming(holder):
                if holder.skip_parked(entry.id) is None:
                    raise _no_longer_parked(holder, entry, "skipped")
            return 0
        store = self.store_of(entry.projection)
        with naming(store):
            if store.skip_parked(entry.id) is None:
                raise _no_longer_parked(store, entry, "skipped")
            remaining = [
                e
                for e in store.parked(entry.projection)
                if (e.source, e.aggregate) == (entry.source, entry.aggregate)
            ]
        return self.retry_hold(remaining[0]) if remaining else 0

    def _holder(self, entry: ParkedEvent) -> Store:
        """The store that parked ``entry`` of a projection no longer configured."""
        holders = []
        for store in self._distinct_stores():
            with naming(store):
                if any(e.id == entry.id for e in store.parked(entry.projection)):
                    holders.append(store)
        if len(holders) != 1:
            where = "several stores" if holders else "no store"
            raise ReadmodelError(f"e{entry.id}@{entry.projection} is parked in {where}")
        return holders[0]


def no_handler(projection: str) -> str:
    """Why a parked event of a projection no longer configured cannot be retried."""
    return (
        f"projection {projection!r} is no longer configured: its parked events cannot be "
        f"applied (no handler); skip them, or configure the projection again to retry them"
    )


def _not_parked(entry: ParkedEvent, doing: str) -> NotParked:
    """The refusal of ``entry``, not parked when read (skipped, retried or replayed): in the
    same words for a skip and a retry, ``doing`` naming which."""
    return NotParked(
        f"e{entry.id} is no longer parked (it is {entry.status} now); nothing was {doing}",
        entry.status,
    )


def _no_longer_parked(store: Store, entry: ParkedEvent, doing: str) -> NotParked:
    """``entry`` was read parked, but by the time ``store`` held it to be ``doing`` (skipped,
    retried) something else had settled it: a replay's swap, another skip or retry."""
    now = _status_of(store, entry)
    became = "it is gone" if now is None else f"it is {now} now"
    return NotParked(
        f"e{entry.id} is no longer parked ({became}: it changed while being {doing}); "
        f"nothing was {doing}",
        now,
    )


def _keeps(store: Store, name: str) -> bool:
    """Whether ``store`` keeps parked events or checkpoints of projection ``name``."""
    with naming(store):
        return bool(store.parked(name, None) or store.checkpoints(name))


def _status_of(store: Store, entry: ParkedEvent) -> str | None:
    return next((e.status for e in store.parked(entry.projection, None) if e.id == entry.id), None)
