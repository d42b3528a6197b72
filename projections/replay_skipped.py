"""Events an operator skipped (``readmodel parked skip``): a replay leaves them out.

The live model never had a skipped event: the operator chose that it goes on without it,
and the later events of its aggregate were applied after the skip. A replay (a rebuild or
in place) does the same: the projection's entries with status ``skipped`` are read once,
in one query, as a set of ``(source, position)``, and the events streamed from the log are
looked up in it (nothing at all when it is empty); the events of their aggregates after
them are applied as any other. ``apply_skipped`` (``readmodel replay --apply-skipped``, a
rebuild only) reads none: they are applied again, and the swap marks those it applied
``replayed``.

An event skipped while a rebuild runs was still parked when it started, so the rebuild
re-attempts it like the other parked events: the swap marks it ``replayed`` if it applied it
(:func:`sql_settle_skipped_since`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from outbox.envelope import Envelope
from projections.document_holds import PARKED
from projections.replay_types import ReplayOptions, SourcePlan
from projections.store_tables import parked_events

_CHUNK = 500  # entry ids per statement


@dataclass
class OperatorSkips:
    """The skipped entries of one projection read when its replay started."""

    entries: dict[tuple[str, int], int] = field(default_factory=dict)
    """``(source, position)`` -> the parked entry's id (a MongoDB store's ``number``)."""
    apply: bool = False
    """Whether the replay applies them again (none read)."""
    left_out: set[tuple[str, int]] = field(default_factory=set)
    """Those the replay met in the log and left out."""

    def leave_out(self, batches: Iterator[list[Envelope]]) -> Iterator[list[Envelope]]:
        """``batches`` without the skipped events (a batch left empty is not yielded)."""
        if not self.entries:
            yield from batches
            return
        entries, left_out = self.entries, self.left_out
        try:
            for batch in batches:
                kept = []
                for event in batch:
                    key = (event.source, event.position or 0)
                    if key in entries:
                        left_out.add(key)
                    else:
                        kept.append(event)
                if kept:
                    yield kept
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()


def sql_skips(engine: sa.Engine, projection: str, options: ReplayOptions) -> OperatorSkips:
    """The projection's skipped entries in a SQL store (none read with ``apply_skipped``)."""
    if options.apply_skipped:
        return OperatorSkips(apply=True)
    c = parked_events.c
    query = sa.select(c.id, c.source, c.position).where(
        c.projection == projection, c.status == "skipped"
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return OperatorSkips({(r.source, int(r.position)): int(r.id) for r in rows})


def document_skips(database: Any, projection: str, options: ReplayOptions) -> OperatorSkips:
    """The projection's skipped entries in a MongoDB store (none read with
    ``apply_skipped``)."""
    if options.apply_skipped:
        return OperatorSkips(apply=True)
    found = database[PARKED].find(
        {"projection": projection, "status": "skipped"}, {"number": 1, "source": 1, "position": 1}
    )
    return OperatorSkips({(d["source"], int(d["position"])): int(d["number"]) for d in found})


def sql_planned(conn: sa.Connection, projection: str, plans: Sequence[SourcePlan]) -> int:
    """How many skipped entries of ``projection`` lie in the planned ranges (for
    ``--dry-run``: in place with ``--tenant``, other tenants' too)."""
    c = parked_events.c
    ranges = [
        sa.and_(c.source == p.source, c.position > p.after, c.position <= p.head) for p in plans
    ]
    if not ranges:
        return 0
    query = sa.select(sa.func.count()).where(
        c.projection == projection, c.status == "skipped", sa.or_(*ranges)
    )
    return int(conn.execute(query).scalar_one())


def document_planned(database: Any, projection: str, plans: Sequence[SourcePlan]) -> int:
    """:func:`sql_planned` for a MongoDB store."""
    ranges = [{"source": p.source, "position": {"$gt": p.after, "$lte": p.head}} for p in plans]
    if not ranges:
        return 0
    query = {"projection": projection, "status": "skipped", "$or": ranges}
    return int(database[PARKED].count_documents(query))


def settled_statuses(skips: OperatorSkips | None) -> tuple[str, ...]:
    """The statuses of the entries a swap marks ``replayed`` in one statement: skipped ones
    too when the rebuild applied them again."""
    return ("skipped", "parked") if skips is None or skips.apply else ("parked",)


def sql_settle_skipped_since(
    conn: sa.Connection, projection: str, skips: OperatorSkips | None
) -> None:
    """Mark ``replayed`` the entries skipped since the rebuild read ``skips`` (it applied
    them), in the swap's transaction."""
    if skips is None or skips.apply:
        return
    c = parked_events.c
    ids = conn.execute(
        sa.select(c.id).where(c.projection == projection, c.status == "skipped")
    ).scalars()
    since = sorted(set(map(int, ids)) - set(skips.entries.values()))
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
    if skips is None or skips.apply:
        return
    found = database[PARKED].find(
        {"projection": projection, "status": "skipped"}, {"number": 1}, session=session
    )
    since = sorted({int(d["number"]) for d in found} - set(skips.entries.values()))
    if since:
        database[PARKED].update_many(
            {"projection": projection, "number": {"$in": since}}, replayed, session=session
        )
