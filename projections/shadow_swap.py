"""The swap of a blue/green rebuild (:meth:`projections.shadow.ShadowTables.swap`): every
shadow put in place of its live table in the caller's transaction, with what the live
tables hold beside the declared model carried to the new ones.

PostgreSQL: the live tables (and the tables whose foreign keys reference them) are locked,
then their catalog is read; each live table is renamed ``<table>__old`` (its indexes and
sequences ``rm_old_<oid>``), marked as readmodel's (:mod:`projections.shadow_leftovers`),
and its shadow takes the live name, the shadow's indexes, sequences and constraints their
live names; the old tables are dropped after commit.
SQLite: the live tables are dropped in the swap itself (see :func:`sqlite_swap`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from projections.shadow_catalog import (
    PgExtras,
    make_or_stop,
    pg_capture,
    pg_restore,
    sqlite_dependents,
    sqlite_drop,
    sqlite_hand_made,
    sqlite_restore,
)
from projections.shadow_columns import pg_copy_column_settings
from projections.shadow_constraints import (
    pg_drop_referencing,
    pg_referencing_keys,
    pg_restore_referencing,
)
from projections.shadow_keys import LateOutsideKeys, OutsideKey
from projections.shadow_leftovers import (
    literal,
    pg_free_leftover_name,
    pg_mark_leftover,
    pg_marked,
    sqlite_unmark,
    warn_lookalikes,
)
from projections.shadow_names import (
    catalog_name,
    leftover_name,
    old_name,
    qualified,
    quoter,
    run,
    table_sql,
)
from projections.shadow_security import (
    TableState,
    pg_copy_acl,
    pg_restore_state,
    pg_set_owner,
    pg_table_state,
)

if TYPE_CHECKING:
    from projections.shadow import ShadowTables


def pg_swap(shadows: ShadowTables, conn: sa.Connection) -> list[str]:
    """Put every shadow in place of its live table; returns the old tables to drop after
    commit."""
    quote = quoter(conn)
    old_tables: list[str] = []
    # The live catalog is read under the lock that keeps it as it is read (an index a
    # CREATE INDEX CONCURRENTLY finishes meanwhile is complete by then, or left named).
    # The tables whose foreign keys the swap makes again are locked first, in one order:
    # locked after the live ones, a transaction that wrote one and then reads a live
    # table would deadlock with the swap.
    live = [sql for _, sql in shadows.live_tables(conn)]
    outside = sorted({key.table for key in pg_referencing_keys(conn, shadows.live_tables(conn))})
    tables = ", ".join([*outside, *live])
    if tables:
        run(conn, f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")
    shadows._refuse(conn)  # what was made during the rebuild
    views = shadows._views(conn)
    late: list[OutsideKey] = []
    shadows.carry(conn, outside=late)  # one made by hand during the rebuild
    if late:  # a foreign key to a table outside: not validated under this lock
        raise LateOutsideKeys(late)
    # Read before any rename, so that their text names the live tables: recreated after
    # the renames, it names the new ones.
    extras: dict[sa.Table, PgExtras] = {
        live: pg_capture(conn, table_sql(conn, live)) for live in shadows.mapping
    }
    referencing = pg_referencing_keys(conn, shadows.live_tables(conn))
    pg_drop_referencing(conn, referencing)  # made again on the new tables
    states: dict[sa.Table, TableState] = {
        live: pg_table_state(conn, table_sql(conn, live)) for live in shadows.mapping
    }
    for live, shadow in shadows.mapping.items():
        live_sql = table_sql(conn, live)
        pg_set_owner(conn, table_sql(conn, shadow), states[live])
        pg_copy_acl(conn, live_sql, table_sql(conn, shadow))
        pg_copy_column_settings(conn, live_sql, table_sql(conn, shadow))
        for name, kind in pg_dependents(conn, live):
            oid = conn.exec_driver_sql(
                "SELECT %(name)s::regclass::oid", {"name": qualified(conn, live, name)}
            ).scalar_one()
            renamed = quote(f"rm_old_{oid}")
            run(conn, f"ALTER {kind} {qualified(conn, live, name)} RENAME TO {renamed}")
        # ``left``: the old table of an earlier replay, which could not drop it
        old, left = pg_old_name(conn, live, shadows.warned)
        old_tables += [left] if left else []
        pg_leave_publications(conn, live_sql)  # its shadow joins them with its state
        run(conn, f"ALTER TABLE {live_sql} RENAME TO {quote(old)}")
        pg_mark_leftover(conn, live, old)  # what a later replay or --cleanup may drop
        run(conn, f"ALTER TABLE {table_sql(conn, shadow)} RENAME TO {quote(live.name)}")
        # The shadow's mark goes: the declared comment, or the live table's (restored below).
        run(conn, f"COMMENT ON TABLE {live_sql} IS {literal(shadow.comment)}")
        for name, kind in pg_dependents(conn, live):
            run(
                conn,
                f"ALTER {kind} {qualified(conn, live, name)} "
                f"RENAME TO {quote(shadows._live_name(conn, name, live))}",
            )
        for name in pg_table_constraints(conn, live):
            if shadows.suffix in name:
                run(
                    conn,
                    f"ALTER TABLE {live_sql} RENAME CONSTRAINT {quote(name)} "
                    f"TO {quote(shadows._live_name(conn, name, live))}",
                )
        old_tables.append(qualified(conn, live, old))
    for live, extra in extras.items():  # every table has its live name again
        pg_restore(conn, table_sql(conn, live), extra)
        pg_restore_state(conn, table_sql(conn, live), states[live])
    for view in views:  # now reading the new tables, which have the old names
        run(conn, view.redefine())
    pg_restore_referencing(conn, referencing)
    return old_tables


def sqlite_swap(shadows: ShadowTables, conn: sa.Connection) -> None:
    """Drop each live table, give its shadow the name, make the declared indexes under
    the live names and run again the statements that made its hand-made indexes. The
    triggers and views on the tables or naming one (here or outside the projection) are
    dropped first and made again last from their text (naming the new tables then):
    SQLite would check them at each rename, while a table they name is missing."""
    quote = quoter(conn)
    dependents = sqlite_dependents(conn, [live.name for live in shadows.mapping])
    sqlite_drop(conn, dependents)
    for live, shadow in shadows.mapping.items():
        live_sql = table_sql(conn, live)
        known = {
            shadows._live_name(conn, str(index["name"]), live)
            for index in sa.inspect(conn).get_indexes(shadow.name, schema=shadow.schema)
        }
        made = sqlite_hand_made(conn, live.name, known)
        run(conn, f"DROP TABLE IF EXISTS {live_sql}")
        for index in shadow.indexes:
            index.drop(conn)
        run(conn, f"ALTER TABLE {table_sql(conn, shadow)} RENAME TO {quote(live.name)}")
        for index in live.indexes:
            index.create(conn)
        sqlite_restore(conn, live.name, made)
    sqlite_unmark(
        conn, [qualified(conn, live, shadow.name) for live, shadow in shadows.mapping.items()]
    )
    for kind, name, table, sql in dependents:
        make_or_stop(conn, table, sql, f"{kind} {name}")


_PG_DEPENDENTS = """
SELECT c.relname, 'INDEX' FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE i.indrelid = %(table)s::regclass
UNION ALL
SELECT c.relname, 'SEQUENCE' FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
 WHERE d.refobjid = %(table)s::regclass AND d.classid = 'pg_class'::regclass
   AND c.relkind = 'S' AND d.deptype IN ('a', 'i')
"""


def pg_dependents(conn: sa.Connection, table: sa.Table) -> list[tuple[str, str]]:
    """Names (and kinds) of the indexes and owned sequences of ``table`` as it is named now."""
    rows = conn.exec_driver_sql(_PG_DEPENDENTS, {"table": table_sql(conn, table)})
    return [(str(name), str(kind)) for name, kind in rows]


_PG_CONSTRAINTS = """
SELECT conname FROM pg_constraint WHERE conrelid = %(table)s::regclass AND contype IN ('c', 'f')
"""


def pg_table_constraints(conn: sa.Connection, table: sa.Table) -> list[str]:
    """Names of the table's CHECK and foreign key constraints (per table, not relations:
    the index-backed ones are renamed with their indexes)."""
    rows = conn.exec_driver_sql(_PG_CONSTRAINTS, {"table": table_sql(conn, table)})
    return [str(name) for (name,) in rows]


_PG_PUBLICATIONS = """
SELECT p.pubname FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
 WHERE r.prrelid = %(table)s::regclass ORDER BY 1
"""


def pg_leave_publications(conn: sa.Connection, table_sql: str) -> None:
    """Take the live table (to be the old one) out of the publications that list it: left
    behind there, its emptying or drop would be published, to subscribers that have no
    such table."""
    quote = quoter(conn)
    for (name,) in conn.exec_driver_sql(_PG_PUBLICATIONS, {"table": table_sql}).all():
        run(conn, f"ALTER PUBLICATION {quote(str(name))} DROP TABLE {table_sql}")


def pg_old_name(conn: sa.Connection, live: sa.Table, warned: set[str]) -> tuple[str, str | None]:
    """The name the live table takes as the old one, and the SQL name of the old table an
    earlier replay left under :func:`old_name`, which needs that name: renamed here to its
    :func:`leftover_name` (unique by its oid; the rename locks it alone). A table of that
    name readmodel did not mark (:mod:`projections.shadow_leftovers`) is left alone, with a
    warning (once: ``warned``): the live table takes a free leftover name instead."""
    old = old_name(live.name)
    marked = pg_marked(conn, live, old)
    if marked is None:
        return old, None
    oid = conn.exec_driver_sql(
        "SELECT to_regclass(%(t)s)::oid", {"t": qualified(conn, live, old if marked else live.name)}
    ).scalar_one()
    name = pg_free_leftover_name(conn, live, int(oid))
    if not marked:
        warn_lookalikes(live, [qualified(conn, live, old)], warned)
        return name, None
    quote = quoter(conn)
    run(conn, f"ALTER TABLE {qualified(conn, live, old)} RENAME TO {quote(name)}")
    return old, qualified(conn, live, name)


_PG_LEFTOVERS = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = coalesce(%(schema)s, current_schema()) AND c.relkind IN ('r', 'p')
   AND c.relname ~ '__old_[0-9]+$'
"""


def pg_leftover_names(conn: sa.Connection, live: sa.Table) -> list[str]:
    """The tables named like the old tables of ``live`` that earlier replays left and a swap
    renamed (whether readmodel made them is the mark's to say)."""
    if conn.dialect.name != "postgresql":
        return []
    schema = None if live.schema is None else catalog_name(live.schema)
    rows = conn.exec_driver_sql(_PG_LEFTOVERS, {"schema": schema}).scalars()
    return [
        str(name)
        for name in rows
        if str(name) == leftover_name(live.name, int(str(name).rsplit("_", 1)[1]))
    ]
