"""Events an operator skipped (``readmodel parked skip``): a replay leaves them out.

The live model never had a skipped event: the operator chose that it goes on without it,
and the later events of its aggregate were applied after the skip. A replay (a rebuild or
in place) does the same: the projection's entries with status ``skipped`` are read when it
starts, in one query, as a set of ``(source, position)``, and the events streamed from the
log are looked up in it (nothing at all while it is empty); the events of their aggregates
after them are applied as any other. With ``apply_skipped`` (``readmodel replay
--apply-skipped``, a rebuild only) they are applied again, and the swap marks those it
applied ``replayed``; with ``--skip-errors`` too, one whose handler still fails stays
``skipped``, neither parked again nor holding its aggregate
(:mod:`projections.replay_skip_policy`).

An operator may skip an event while a replay runs (one parked live meanwhile, or parked
when it started). So the set is read again where it matters (:meth:`OperatorSkips.add`):
before each pass of a rebuild over the log, before the events a failed swap applies
outside it, in the swap's transaction once it has locked the live lanes and the parked
entries (the last read: a skip committed before it is left out of the swap's catch-up; one
after it waits for the swap, :func:`projections.sql_settle.lock_parked`), and in place in
each batch's transaction. The whole set is read again: it is small, and no column tells the entries
skipped since a read (``resolved_at`` is the skipping transaction's clock, which may
commit after a read that started later). An event skipped before the replay met it is left
out and its entry stays ``skipped``; one the replay applied before the skip (a rebuild
re-attempts parked events) is in the rebuilt model, and the swap marks its entry
``replayed`` (:func:`sql_settle_skipped_since`). One a rebuild skipped (``--skip-errors``: its
handler failed, or it was held behind one that did) is no longer parked by the swap: the
operator's skip wins, the rebuild forgets it (:meth:`ErrorPolicy.overrule
<projections.replay_policy.ErrorPolicy.overrule>`, counted in :attr:`OperatorSkips.left_out`)
and applies the events it held behind it, at the next read (the swap's transaction rolls
back and does so outside it, then starts again); with ``apply_skipped``, one read at the
start held behind a new failure is parked with it (to be applied when it is retried). An
entry read once stays in the set for the rest of the replay (purged meanwhile: the event is
still left out).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from outbox.envelope import Envelope
from outbox.schema import event_log
from projections.document_holds import PARKED
from projections.replay_types import ReplayOptions, SourcePlan
from projections.store_tables import parked_events

_CHUNK = 500  # entry ids per statement


@dataclass
class OperatorSkips:
    """The skipped entries of one projection read while its replay runs."""

    entries: dict[tuple[str, int], int] = field(default_factory=dict)
    """``(source, position)`` -> the parked entry's id (a MongoDB store's ``number``)."""
    apply: bool = False
    """Whether the replay applies them again (:meth:`leave_out` keeps them)."""
    left_out: set[tuple[str, int]] = field(default_factory=set)
    """Those the replay met in the log and left out (applying them again: those whose
    handler still failed, with ``--skip-errors``), and those a rebuild skipped
    (``--skip-errors``) before an operator skipped them."""
    failed: set[tuple[str, int]] = field(default_factory=set)
    """Of :attr:`left_out`, those whose handler failed in this replay: applied again and
    still failing, or failed (skipped by a rebuild) before an operator skipped them. Not
    those a rebuild only held behind a failure: their handler never ran."""
    late: set[tuple[str, int]] = field(default_factory=set)
    """Those first read after the replay started (skipped while it ran): a rebuild may have
    applied one before (those it did not are in :attr:`left_out`)."""

    def add(self, found: Mapping[tuple[str, int], int]) -> None:
        """Take in the entries ``found`` by a read of the set after the first: those not
        known yet are :attr:`late`."""
        for key, number in found.items():
            if key not in self.entries:
                self.entries[key] = number
                self.late.add(key)

    def leave_out(self, batches: Iterator[list[Envelope]]) -> Iterator[list[Envelope]]:
        """``batches`` without the skipped events (a batch left empty is not yielded); the
        set is looked at batch by batch (it may grow meanwhile)."""
        if self.apply:
            yield from batches
            return
        try:
            for batch in batches:
                kept = self.kept(batch)
                if kept:
                    yield kept
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def kept(self, events: Sequence[Envelope]) -> Sequence[Envelope]:
        """``events`` without the skipped ones (recorded in :attr:`left_out`); all of them
        with ``apply``."""
        entries = self.entries
        if self.apply or not entries:
            return events
        kept = []
        for event in events:
            key = (event.source, event.position or 0)
            if key in entries:
                self.left_out.add(key)
            else:
                kept.append(event)
        return kept


def sql_skips(engine: sa.Engine, projection: str, options: ReplayOptions) -> OperatorSkips:
    """The projection's skipped entries in a SQL store."""
    with engine.connect() as conn:
        return OperatorSkips(sql_skipped(conn, projection), apply=options.apply_skipped)


def sql_skipped(conn: sa.Connection, projection: str) -> dict[tuple[str, int], int]:
    """``(source, position)`` -> entry id of the projection's skipped entries, read in
    ``conn`` (in a transaction: as it sees them)."""
    c = parked_events.c
    query = sa.select(c.id, c.source, c.position).where(
        c.projection == projection, c.status == "skipped"
    )
    return {(r.source, int(r.position)): int(r.id) for r in conn.execute(query)}


def document_skips(database: Any, projection: str, options: ReplayOptions) -> OperatorSkips:
    """The projection's skipped entries in a MongoDB store."""
    entries = document_skipped(database, projection)
    return OperatorSkips(entries, apply=options.apply_skipped)


def document_skipped(
    database: Any, projection: str, session: Any = None
) -> dict[tuple[str, int], int]:
    """:func:`sql_skipped` for a MongoDB store (in ``session``'s transaction, if given)."""
    found = database[PARKED].find(
        {"projection": projection, "status": "skipped"},
        {"number": 1, "source": 1, "position": 1},
        session=session,
    )
    return {(d["source"], int(d["position"])): int(d["number"]) for d in found}


def sql_planned(
    conn: sa.Connection,
    projection: str,
    plans: Sequence[SourcePlan],
    log: sa.Engine,
    tenant: str | None = None,
) -> int:
    """How many skipped entries of ``projection`` lie in the planned ranges (for
    ``--dry-run``); with ``tenant`` (in place), only those of that tenant's events, as the
    ``log`` records them (:func:`of_tenant`)."""
    c = parked_events.c
    ranges = [
        sa.and_(c.source == p.source, c.position > p.after, c.position <= p.head) for p in plans
    ]
    if not ranges:
        return 0
    where = (c.projection == projection, c.status == "skipped", sa.or_(*ranges))
    if tenant is None:
        return int(conn.execute(sa.select(sa.func.count()).where(*where)).scalar_one())
    keys = conn.execute(sa.select(c.source, c.position).where(*where))
    return of_tenant(log, [(r.source, int(r.position)) for r in keys], tenant)


def document_planned(
    database: Any,
    projection: str,
    plans: Sequence[SourcePlan],
    log: sa.Engine,
    tenant: str | None = None,
) -> int:
    """:func:`sql_planned` for a MongoDB store."""
    ranges = [{"source": p.source, "position": {"$gt": p.after, "$lte": p.head}} for p in plans]
    if not ranges:
        return 0
    query = {"projection": projection, "status": "skipped", "$or": ranges}
    if tenant is None:
        return int(database[PARKED].count_documents(query))
    found = database[PARKED].find(query, {"source": 1, "position": 1})
    return of_tenant(log, [(d["source"], int(d["position"])) for d in found], tenant)


def of_tenant(log: sa.Engine, keys: Sequence[tuple[str, int]], tenant: str) -> int:
    """How many of the events at ``keys`` (``(source, position)``) the ``log`` records as
    ``tenant``'s: what an in-place replay of that tenant streams. Not the entry's own
    ``tenant``: that is the hold's it was parked under, none for merged holds
    (:mod:`projections.sql_parking`)."""
    by_source: dict[str, list[int]] = {}
    for source, position in keys:
        by_source.setdefault(source, []).append(position)
    c = event_log.c
    found = 0
    with log.connect() as conn:
        for source, positions in sorted(by_source.items()):
            positions.sort()
            for at in range(0, len(positions), _CHUNK):
                query = sa.select(sa.func.count()).where(
                    c.source == source,
                    c.position.in_(positions[at : at + _CHUNK]),
                    c.tenant == tenant,
                )
                found += int(conn.execute(query).scalar_one())
    return found


def settled_statuses(skips: OperatorSkips | None) -> tuple[str, ...]:
    """The statuses of the entries a swap marks ``replayed`` in one statement (skipped ones
    are marked by :func:`sql_settle_skipped_since` when the rebuild read ``skips``)."""
    return ("skipped", "parked") if skips is None else ("parked",)


def _not_applied(skips: OperatorSkips) -> set[int]:
    """The ids of the skipped entries the rebuild did not apply: those read when it started
    and those read later that it left out, or, applying them again, those whose handler
    still failed."""
    if not skips.apply:
        late, left_out = skips.late, skips.left_out
        return {n for key, n in skips.entries.items() if key not in late or key in left_out}
    return {skips.entries[key] for key in skips.left_out}


def sql_settle_skipped_since(
    conn: sa.Connection, projection: str, skips: OperatorSkips | None
) -> None:
    """Mark ``replayed`` the skipped entries the rebuild applied (those skipped after it
    applied them; with ``apply_skipped``, every one but those still failing), in the swap's
    transaction."""
    if skips is None:
        return
    c = parked_events.c
    ids = conn.execute(
        sa.select(c.id).where(c.projection == projection, c.status == "skipped")
    ).scalars()
    since = sorted(set(map(int, ids)) - _not_applied(skips))
    for at in range(0, len(since), _CHUNK):
        conn.execute(
            parked_events.update()
            .where(c.id.in_(since[at : at + _CHUNK]))
            .values(status="replayed", resolved_at=sa.func.current_timestamp())
        )


def document_settle_skipped_since(
    database: Any, session: Any, projection: str, skips: OperatorSkips | None, replayed: Any
) -> None:
    """:func:`sql_settle_skipped_since` for a MongoDB store (``replayed``: the update)."""
    if skips is None:
        return
    found = database[PARKED].find(
        {"projection": projection, "status": "skipped"}, {"number": 1}, session=session
    )
    since = sorted({int(d["number"]) for d in found} - _not_applied(skips))
    if since:
        database[PARKED].update_many(
            {"projection": projection, "number": {"$in": since}}, replayed, session=session
        )
