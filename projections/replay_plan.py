"""What a replay would do, read before it runs and printed by ``readmodel replay --dry-run``:
the events each source has to apply (the table and document replayers alike) and, for a
table projection, its tables, the leftovers of an earlier replay, why a rebuild would be
refused and what its swap would carry beside the declared model
(:mod:`projections.shadow_plan`). Reads only.
"""

from __future__ import annotations

import sqlalchemy as sa

from outbox.schema import event_log
from projections.api import Projection
from projections.log_reader import LogReader
from projections.replay_scope import check_options, count_events
from projections.replay_skipped import sql_planned
from projections.replay_types import (
    BLUE_GREEN,
    ReplayOptions,
    ReplayPlan,
    ReplayRefused,
    SourcePlan,
)
from projections.shadow import ShadowTables
from projections.shadow_leftovers import drop_unmarked_hint


def source_plans(
    reader: LogReader, projection: Projection, options: ReplayOptions
) -> list[SourcePlan]:
    """Each source to replay, from where, up to its head, and how many of its events the
    projection reads in that range; raises :class:`ReplayRefused` for options that do not
    fit."""
    heads = reader.heads()
    after = options.from_position or 0
    plans = []
    for source in check_options(projection, options, heads):
        head = heads.get(source, 0)
        types = projection.event_types(source)
        count = count_events(reader.engine, source, after, head, types, options.tenant)
        plans.append(SourcePlan(source, after, head, count))
    if options.tenant is not None and not any(plan.events for plan in plans):
        _check_tenant(reader.engine, projection.name, options.tenant, [p.source for p in plans])
    return plans


_TENANTS_SHOWN = 20


def _check_tenant(engine: sa.Engine, projection: str, tenant: str, sources: list[str]) -> None:
    """Refuse ``--tenant`` naming a tenant no event of ``sources`` has in the log (a typo
    would replay nothing and pass for a repair), naming the tenants it has: names only.
    Read only when no event of the tenant lies in the range, so a real replay pays nothing."""
    c = event_log.c
    with engine.connect() as conn:
        mine = sa.select(c.position).where(c.source.in_(sources), c.tenant == tenant).limit(1)
        if sources and conn.execute(mine).first() is not None:
            return
        names = sa.select(c.tenant).distinct().where(c.source.in_(sources), c.tenant.is_not(None))
        found = list(conn.execute(names.order_by(c.tenant).limit(_TENANTS_SHOWN + 1)).scalars())
    shown = ", ".join(found[:_TENANTS_SHOWN]) + (", ..." if len(found) > _TENANTS_SHOWN else "")
    where = ", ".join(sources) or "none in the log yet"
    raise ReplayRefused(
        f"--tenant {tenant!r}: no event of that tenant is in the log of the sources "
        f"{projection!r} replays ({where}); the tenants it has there: {shown or 'none'} "
        f"(a mistyped tenant would replay nothing)"
    )


def table_plan(
    reader: LogReader,
    projection: Projection,
    shadow: ShadowTables,
    engine: sa.Engine,
    options: ReplayOptions,
    *,
    carried: bool = True,
) -> ReplayPlan:
    """The plan of a table projection's replay, with (``carried``) what a rebuild's swap
    would carry beside the declared model."""
    sources = source_plans(reader, projection, options)
    rebuild = options.mode == BLUE_GREEN
    warnings: list[str] = []
    kept: list[str] = []
    with engine.connect() as conn:
        left_out = 0
        if not options.apply_skipped:
            left_out = sql_planned(conn, projection.name, sources, reader.engine, options.tenant)
        leftovers = shadow.leftovers(conn)
        if rebuild:
            warnings = [f"the rebuild will be refused: {r}" for r in shadow.refusals(conn)]
            kept = shadow.carried(conn, warnings) if carried else []
        warnings += _outside_key_warnings(shadow, conn)
        warnings += [
            f"{name} is named like a replay leftover but readmodel did not make it: left "
            f"alone (if it is a leftover: {drop_unmarked_hint(projection.name, name)})"
            for name in shadow.lookalikes(conn)
        ]
    if rebuild:
        tables = [(t.name, s.name) for t, s in shadow.mapping.items()]
    else:
        tables = [(t.name, t.name) for t in projection.tables]
    return ReplayPlan(
        projection.name,
        options.mode,
        sources,
        tables,
        leftovers,
        options.tenant,
        warnings=warnings,
        carried=kept,
        skipped_by_operator=left_out,
    )


def _outside_key_warnings(shadow: ShadowTables, conn: sa.Connection) -> list[str]:
    """A shadow keeping a foreign key to a table outside the projection holds that table
    up: say so, for the shadow of a killed replay as for one being built."""
    return [
        f"shadow {table} (left by an earlier replay, or being built) keeps foreign "
        f"key {key} to {target}: deletes on {target} may be refused (or cascade into "
        f"it) until a replay or --cleanup drops it"
        for table, key, target in shadow.outside_keys(conn)
    ]
