"""Shadow copies of a projection's tables for a blue/green rebuild, and the swap.

A shadow table is named ``<table>__rebuild``; every index, constraint and sequence of
it carries ``__rebuild`` in its name too, so a shadow never collides with its live table,
and the swap can give each object the name the live one had (the name minus the suffix).
A long table name is cut short and given a hash of the whole name instead
(``<start>_<hash>__rebuild``, 47 bytes at most, so that the names PostgreSQL derives
from it, ``..._pkey`` or ``..._<column>_seq``, keep the suffix within its 63 bytes);
indexes and constraints declared on the table get their shadow names from the live ones
and take them back at the swap (the names: :mod:`projections.shadow_names`).
Foreign keys between the projection's tables join their shadows (the copies:
:mod:`projections.shadow_copy`). :meth:`ShadowTables.live_tables` says which live tables
exist, by their SQL names.
On PostgreSQL a new shadow has row-level security on and none of the privileges default
privileges gave it (:mod:`projections.shadow_security`): no role but the replay reads it.
The swap locks the live tables, then reads their catalog, renames each live table to
``<table>__old`` (its indexes and sequences to ``rm_old_<oid>``) and the shadow to the live
name, in the caller's transaction (:mod:`projections.shadow_swap`); the old tables are
dropped after commit, under a bounded lock wait (:mod:`projections.shadow_drop`). What the
database holds beside the declared model is carried over (:mod:`projections.shadow_catalog`,
:mod:`projections.shadow_security`): the owner and exactly the live privileges on the
tables, their columns and sequences; indexes made by hand (built on the shadow once it is
filled, before the swap, as ``<index>__rebuild``, and renamed back by the swap:
:mod:`projections.shadow_carry`; one that cannot be built stops the replay, naming it,
before anything live changes); constraints made by hand, built the same way, and the
foreign keys of other tables referencing a live table, made again on the new one in the
swap (:mod:`projections.shadow_constraints`);
per-column settings, set on the shadow before it is filled and again at the swap
(:mod:`projections.shadow_columns`); row-level security (the flags as they were, every
policy), triggers made by hand, comments, storage options, the replica identity and
publications (made on the new table in the swap transaction, after its last events are
applied, once it has the live name); the views that read the tables (redefined on the new
tables, with their options). Refused before the rebuild starts
(:meth:`ShadowTables.refusals`): a materialized view, an object outside the projection that
depends on a live table, an owner or publication the replay's role cannot set. Not carried:
an invalid index (a failed ``CREATE INDEX CONCURRENTLY``); a warning names it.
:meth:`ShadowTables.carried` lists what the swap carries (:mod:`projections.shadow_plan`).

SQLite has no ``ALTER INDEX RENAME``: there the live table is dropped inside the swap
transaction and the shadow's named indexes are recreated under the live names, and the
hand-made indexes of the live table (the statements ``sqlite_master`` kept) are run again
on the new one; the triggers and views on the projection's tables or naming one are dropped
first and made again last (SQLite checks them at every rename); its constraints keep the
live names from the start (SQLite names them per table). SQLite keeps no comments: a shadow
is recorded in a table of readmodel's instead (:mod:`projections.shadow_leftovers`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import conv

from outbox.catalog_names import create_missing, table_exists
from outbox.errors import StoreError
from projections.shadow_carry import ShadowCarry
from projections.shadow_catalog import PgView, pg_views
from projections.shadow_columns import (
    pg_carry_column_rules,
    pg_copy_column_settings,
    pg_warn_declared_rules,
)
from projections.shadow_copy import copy_table, retarget_foreign_keys
from projections.shadow_keys import pg_outside_keys
from projections.shadow_leftovers import (
    LEFTOVER_MARK,
    SHADOW_MARK,
    drop_unmarked_hint,
    pg_mark_leftover,
    pg_marked,
    sqlite_mark_shadow,
    sqlite_marked,
    sqlite_unmark,
    warn_lookalikes,
)
from projections.shadow_names import (
    OLD_SUFFIX,
    PG_NAME_LIMIT,
    SHADOW_SUFFIX,
    canonical,
    catalog_name,
    fitted,
    old_name,
    qualified,
    run,
    shadow_name,
    signature,
    table_sql,
)
from projections.shadow_plan import describe_carried
from projections.shadow_security import pg_lock_down, pg_refusals
from projections.shadow_swap import pg_dependents, pg_leftover_names, pg_swap, sqlite_swap

__all__ = ["OLD_SUFFIX", "SHADOW_SUFFIX", "ShadowTables", "drop_tables", "old_name", "shadow_name"]


class ShadowTables(ShadowCarry):
    """The shadow copy of each of a projection's tables (logical table -> shadow table),
    named with ``suffix``."""

    def __init__(
        self,
        tables: Iterable[sa.Table],
        *,
        suffix: str = SHADOW_SUFFIX,
        projection: str | None = None,
        schema: str | None = None,
    ) -> None:
        self.suffix = suffix
        self.projection = projection
        """The projection's name, for the command that drops a table named like a shadow
        that readmodel did not mark (:func:`drop_unmarked_hint`)."""
        self.mapping: dict[sa.Table, sa.Table] = {}
        self.warned: set[str] = set()
        """The tables named like leftovers that readmodel did not make, warned of already:
        once per replay."""
        self._declared: dict[str, sa.Index | sa.Constraint] = {}  # by shadow name
        self._carried: dict[str, str] = {}  # hand-made index: shadow name -> live name
        for table in tables:
            shadow = copy_table(table, shadow_name(table.name, suffix), schema)
            self._name_after(table, shadow)
            self.mapping[table] = shadow
        retarget_foreign_keys(self.mapping)

    def _name_after(self, live: sa.Table, shadow: sa.Table) -> None:
        """Name the shadow's indexes and constraints after the live table's (a naming
        convention would derive them from the shadow's name) and remember the pairs."""
        named = [item for item in [*live.indexes, *live.constraints] if isinstance(item.name, str)]
        by_name = {str(item.name): item for item in named}
        by_signature: dict[tuple[Any, ...], list[sa.Index | sa.Constraint]] = {}
        for item in named:
            by_signature.setdefault(signature(item, live.name), []).append(item)
        copies = [  # unnamed ones are named by the database, after the shadow table
            item for item in [*shadow.indexes, *shadow.constraints] if isinstance(item.name, str)
        ]
        # A name given on the table is copied as it is: it pairs the two. Names a convention
        # derived from the table's name pair by what they index or check.
        for item in sorted(copies, key=lambda item: str(item.name) not in by_name):
            live_item = by_name.pop(str(item.name), None)
            if live_item is None:
                paired = [
                    candidate
                    for candidate in by_signature.get(signature(item, shadow.name), [])
                    if str(candidate.name) in by_name
                ]
                live_item = paired[0] if paired else None
                if live_item is not None:
                    del by_name[str(live_item.name)]
            if live_item is not None:
                # From the catalog's name (a ``quote=False`` one folded): as plain text the
                # copy's would be quoted, keeping a case the live one does not have.
                item.name = conv(fitted(catalog_name(live_item.name), self.suffix, PG_NAME_LIMIT))
                self._declared[str(item.name)] = live_item
            elif self.suffix not in str(item.name):
                item.name = conv(fitted(catalog_name(item.name), self.suffix, PG_NAME_LIMIT))

    def _live_name(self, conn: sa.Connection, name: str, live: sa.Table) -> str:
        """The name a shadow's index, sequence or constraint takes at the swap: the live
        one's when declared (on PostgreSQL as its catalog holds it: a ``quote=False`` name
        folded, :func:`catalog_name`; SQLite, whose ``sqlite_master`` keeps the name as
        written, is compared with that); one the database derived from the shadow's name
        (``_pkey``, ``_<column>_seq``) is derived from the live table's name if that fits."""
        if name in self._carried:
            return self._carried[name]
        declared = self._declared.get(name)
        if declared is not None:
            preparer = conn.dialect.identifier_preparer
            written = preparer.format_constraint(declared, _alembic_quote=False)
            return catalog_name(written) if conn.dialect.name == "postgresql" else str(written)
        shadow = self.mapping[live].name
        if name.startswith(shadow):
            derived = f"{catalog_name(live.name)}{name[len(shadow) :]}"
            if len(derived.encode()) <= PG_NAME_LIMIT:
                return derived
        return canonical(name, self.suffix)

    def _in_dependency_order(self) -> list[sa.Table]:
        """The shadows, each after the shadows its foreign keys point at."""
        return list(sa.schema.sort_tables(self.mapping.values()))

    def renamed(self, suffix: str, schema: str | None = None) -> ShadowTables:
        """Shadows of the same tables, named with ``suffix`` instead (none made yet), in
        ``schema`` if given."""
        return ShadowTables(self.mapping, suffix=suffix, schema=schema)

    def names(self) -> list[str]:
        return [shadow.name for shadow in self.mapping.values()]

    def refusals(self, conn: sa.Connection) -> list[str]:
        """Why a rebuild must not start (none: it may): a table named like a shadow that
        readmodel did not make; on PostgreSQL a materialized view reading a live table, an
        object outside the projection depending on one, an owner or publication the
        replay's role cannot set on the new table."""
        postgresql = conn.dialect.name == "postgresql"
        refused = [view.refusal() for view in self._views(conn) if view.materialized]
        refused += [
            f"{name} is named like its shadow table but readmodel did not make it (it lacks "
            "readmodel's mark: a table of yours, or one an interrupted replay of a readmodel "
            "older than the mark left): rename it if it is yours; if it is a leftover, "
            f"drop it with '{drop_unmarked_hint(self.projection, name)}'"
            for name in self._unmarked_shadows(conn)
        ]
        return refused + pg_refusals(conn, self.live_tables(conn)) if postgresql else refused

    def carried(self, conn: sa.Connection, warnings: list[str] | None = None) -> list[str]:
        """What the swap would carry beside the declared model, one line per object (for
        ``--dry-run``), and to ``warnings`` what it takes as declared over the live tables;
        leaves nothing behind (:mod:`projections.shadow_plan`)."""
        return describe_carried(self, conn, warnings)

    def _refuse(self, conn: sa.Connection) -> None:
        refused = self.refusals(conn)
        if refused:
            raise StoreError("a rebuild cannot start: " + "; ".join(refused))

    def create(self, conn: sa.Connection) -> None:
        self._refuse(conn)  # before any work
        if conn.dialect.name != "postgresql":
            # SQLite cannot rename constraints, whose names are the table's own: keep them
            for shadow in self.mapping.values():
                for constraint in shadow.constraints:
                    live_item = self._declared.get(str(constraint.name))
                    if live_item is not None:
                        constraint.name = live_item.name
        self._create_tables(conn)
        if conn.dialect.name != "postgresql":
            for table, shadow in self.mapping.items():
                sqlite_mark_shadow(conn, table, shadow.name)  # what a cleanup may drop
        else:
            live = dict(self.live_tables(conn))
            for table, shadow in self.mapping.items():
                # What a later replay or --cleanup may drop (the swap gives the new table
                # its declared comment instead).
                pg_mark_leftover(conn, table, shadow.name, SHADOW_MARK)
                # Readable by no one but the replay while it is built, or if it is left over.
                pg_lock_down(conn, table_sql(conn, shadow))
                if table.name in live:  # storage, compression, defaults: for the rows to come
                    pg_copy_column_settings(conn, live[table.name], table_sql(conn, shadow))
                    shadow_sql = table_sql(conn, shadow)
                    pg_warn_declared_rules(conn, table.name, live[table.name], shadow_sql)
                    pg_carry_column_rules(
                        conn, table.name, live[table.name], shadow_sql, not_null=False
                    )
                for name, _ in pg_dependents(conn, shadow):
                    if self.suffix not in name or len(canonical(name, self.suffix)) > PG_NAME_LIMIT:
                        raise StoreError(
                            f"{shadow.name}: index or sequence {name!r} was truncated to "
                            f"{PG_NAME_LIMIT} characters; give it a shorter name"
                        )

    def _create_tables(self, conn: sa.Connection) -> None:
        for shadow in self._in_dependency_order():
            create_missing(conn, shadow)  # a standalone Sequence exists: shared

    def swap(self, conn: sa.Connection) -> list[str]:
        """Put every shadow in place of its live table (in ``conn``'s transaction); returns
        the old tables to drop after commit (none on SQLite, where they are dropped here):
        :mod:`projections.shadow_swap`."""
        if conn.dialect.name != "postgresql":
            sqlite_swap(self, conn)
            return []
        return pg_swap(self, conn)

    def live_tables(self, conn: sa.Connection) -> list[tuple[str, str]]:
        """The projection's live tables that exist in the database now, in the order of
        :attr:`mapping`, each as ``(name, sql)``: its declared name and its SQL name
        (schema-qualified when it has a schema, quoted as needed: :func:`table_sql`). The
        tables are looked up by the catalog's names (a ``quote=False`` one folded:
        :func:`~outbox.catalog_names.table_exists`)."""
        return [
            (live.name, table_sql(conn, live)) for live in self.mapping if table_exists(conn, live)
        ]

    def _views(self, conn: sa.Connection) -> list[PgView]:
        if conn.dialect.name != "postgresql":
            return []
        return pg_views(conn, self.live_tables(conn))

    def outside_keys(self, conn: sa.Connection) -> list[tuple[str, str, str]]:
        """The foreign keys from the shadows readmodel made (marked) to tables outside the
        projection (PostgreSQL): ``(shadow, constraint, referenced table)``; a user's table
        named like a shadow keeps its own."""
        if conn.dialect.name != "postgresql":
            return []
        marked = [
            name for live in self.mapping for name in self._found(conn, live, shadows=True)[0]
        ]
        return pg_outside_keys(conn, marked) if marked else []

    def leftovers(self, conn: sa.Connection) -> list[str]:
        """Shadow and old tables a previous (interrupted) replay left behind: on PostgreSQL
        only when they carry readmodel's mark (:mod:`projections.shadow_leftovers`); a
        table named so without it is left alone, with a warning."""
        found = []
        for live in self.mapping:
            marked, lookalikes = self._found(conn, live)
            found += marked
            warn_lookalikes(live, lookalikes, self.warned, self.projection)
        return found

    def lookalikes(self, conn: sa.Connection) -> list[str]:
        """The tables named like shadow or old tables that readmodel did not make: left
        alone."""
        return [name for live in self.mapping for name in self._found(conn, live)[1]]

    def _unmarked_shadows(self, conn: sa.Connection) -> list[str]:
        return [name for live in self.mapping for name in self._found(conn, live, shadows=True)[1]]

    def _found(
        self, conn: sa.Connection, live: sa.Table, *, shadows: bool = False
    ) -> tuple[list[str], list[str]]:
        """SQL names of the shadow and (unless ``shadows``) old tables of ``live`` that
        replays left, and of the tables named so that readmodel did not make (SQLite: its
        shadow, by the record it made; no old tables, which its swap drops)."""
        shadow = self.mapping[live].name
        if conn.dialect.name != "postgresql":
            mark = sqlite_marked(conn, live, shadow)
            found = [] if mark is None else [qualified(conn, live, shadow)]
            return (found, []) if mark else ([], found)
        marked: list[str] = []
        unmarked: list[str] = []
        names = [(shadow, SHADOW_MARK)]
        if not shadows:
            names.append((old_name(live.name), LEFTOVER_MARK))
            names += [(name, LEFTOVER_MARK) for name in pg_leftover_names(conn, live)]
        for name, kind in names:
            mark = pg_marked(conn, live, name, kind)
            if mark is not None:
                (marked if mark else unmarked).append(qualified(conn, live, name))
        return marked, unmarked


def drop_tables(conn: sa.Connection, names: Iterable[str]) -> None:
    """Drop the tables; on PostgreSQL in one statement, whatever foreign keys join them."""
    names = list(names)
    if conn.dialect.name == "postgresql" and names:
        run(conn, f"DROP TABLE IF EXISTS {', '.join(names)}")
        return
    for name in names:
        run(conn, f"DROP TABLE IF EXISTS {name}")
    if conn.dialect.name == "sqlite":
        sqlite_unmark(conn, names)
