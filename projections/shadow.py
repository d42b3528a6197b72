"""Shadow copies of a projection's tables for a blue/green rebuild, and the swap.

A shadow table is named ``<table>__rebuild``; every index, constraint and sequence of
it carries ``__rebuild`` in its name too, so a shadow never collides with its live table,
and the swap can give each object the name the live one had (the name minus the suffix).
A long table name is cut short and given a hash of the whole name instead
(``<start>_<hash>__rebuild``, 47 bytes at most, so that the names PostgreSQL derives
from it, ``..._pkey`` or ``..._<column>_seq``, keep the suffix within its 63 bytes);
indexes and constraints declared on the table get their shadow names from the live ones
and take them back at the swap.
Foreign keys between the projection's tables join their shadows.
On PostgreSQL the swap renames the live table to ``<table>__old`` (its indexes and
sequences to ``rm_old_<oid>``) and the shadow to the live name, in the caller's
transaction; the old tables are dropped after commit. What the database holds beside the
declared model is carried over: the live tables' and sequences' grants, and the views that
read them (recreated on the new tables, so they never read an old one; a materialized view
is refused before the rebuild starts). Indexes or triggers added by hand are not.

SQLite has no ``ALTER INDEX RENAME``: there the live table is dropped inside the swap
transaction and the shadow's named indexes are recreated under the live names; its
constraints keep the live names from the start (SQLite names them per table).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import conv

from outbox.errors import StoreError

SHADOW_SUFFIX = "__rebuild"
OLD_SUFFIX = "__old"
_PG_NAME_LIMIT = 63
_SHADOW_TABLE_LIMIT = 47


def shadow_name(name: str) -> str:
    return _fitted(name, SHADOW_SUFFIX, _SHADOW_TABLE_LIMIT)


def old_name(name: str) -> str:
    return _fitted(name, OLD_SUFFIX, _PG_NAME_LIMIT)


def _fitted(name: str, suffix: str, limit: int) -> str:
    """``name + suffix``, or within ``limit`` bytes: the start of ``name`` and its hash."""
    if len(f"{name}{suffix}".encode()) <= limit:
        return f"{name}{suffix}"
    digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    tail = f"_{digest}{suffix}"
    start = name
    while len(f"{start}{tail}".encode()) > limit:
        start = start[:-1]
    return f"{start}{tail}"


def _signature(item: sa.Index | sa.Constraint, table: str) -> tuple[Any, ...]:
    """What pairs a live table's index or constraint with its copy on the shadow when
    their names differ (a naming convention derives them from the table's name)."""
    if isinstance(item, sa.Index):
        expressions = tuple(
            e.name if isinstance(e, sa.Column) else str(e).replace(f"{table}.", "")
            for e in item.expressions
        )
        where = item.dialect_options["postgresql"].get("where")
        return ("index", item.unique, expressions, str(where).replace(f"{table}.", ""))
    columns = tuple(c.name for c in getattr(item, "columns", ()))
    text = str(item.sqltext) if isinstance(item, sa.CheckConstraint) else ""
    targets = ""
    if isinstance(item, sa.ForeignKeyConstraint):
        targets = ",".join(str(fk.target_fullname) for fk in item.elements)
    return (type(item).__name__, columns, text.replace(f"{table}.", ""), targets)


def _canonical(name: str) -> str:
    return name.replace(SHADOW_SUFFIX, "", 1)


class ShadowTables:
    """The shadow copy of each of a projection's tables (logical table -> shadow table)."""

    def __init__(self, tables: Iterable[sa.Table]) -> None:
        self.mapping: dict[sa.Table, sa.Table] = {}
        self._declared: dict[str, sa.Index | sa.Constraint] = {}  # by shadow name
        for table in tables:
            metadata = sa.MetaData(naming_convention=dict(table.metadata.naming_convention))
            shadow = table.to_metadata(metadata, name=shadow_name(table.name))
            self._name_after(table, shadow)
            self.mapping[table] = shadow
        for live, shadow in self.mapping.items():
            _retarget_foreign_keys(live, shadow, self.mapping)

    def _name_after(self, live: sa.Table, shadow: sa.Table) -> None:
        """Name the shadow's indexes and constraints after the live table's (a naming
        convention would derive them from the shadow's name) and remember the pairs."""
        named = [item for item in [*live.indexes, *live.constraints] if isinstance(item.name, str)]
        by_name = {str(item.name): item for item in named}
        by_signature: dict[tuple[Any, ...], list[sa.Index | sa.Constraint]] = {}
        for item in named:
            by_signature.setdefault(_signature(item, live.name), []).append(item)
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
                    for candidate in by_signature.get(_signature(item, shadow.name), [])
                    if str(candidate.name) in by_name
                ]
                live_item = paired[0] if paired else None
                if live_item is not None:
                    del by_name[str(live_item.name)]
            if live_item is not None:
                item.name = conv(_fitted(str(live_item.name), SHADOW_SUFFIX, _PG_NAME_LIMIT))
                self._declared[str(item.name)] = live_item
            elif SHADOW_SUFFIX not in str(item.name):
                item.name = conv(_fitted(str(item.name), SHADOW_SUFFIX, _PG_NAME_LIMIT))

    def _live_name(self, conn: sa.Connection, name: str, live: sa.Table) -> str:
        """The name a shadow's index, sequence or constraint takes at the swap: the live
        one's when declared; one the database derived from the shadow's name (``_pkey``,
        ``_<column>_seq``) is derived from the live table's name if that fits."""
        declared = self._declared.get(name)
        if declared is not None:
            preparer = conn.dialect.identifier_preparer
            return str(preparer.format_constraint(declared, _alembic_quote=False))
        shadow = self.mapping[live].name
        if name.startswith(shadow):
            derived = f"{live.name}{name[len(shadow) :]}"
            if len(derived.encode()) <= _PG_NAME_LIMIT:
                return derived
        return _canonical(name)

    def _in_dependency_order(self) -> list[sa.Table]:
        """The shadows, each after the shadows its foreign keys point at."""
        return list(sa.schema.sort_tables(self.mapping.values()))

    def names(self) -> list[str]:
        return [shadow.name for shadow in self.mapping.values()]

    def create(self, conn: sa.Connection) -> None:
        if conn.dialect.name == "postgresql":
            _pg_views(conn, self.mapping)  # refuses materialized views before any work
        else:  # SQLite cannot rename constraints, whose names are the table's own: keep them
            for shadow in self.mapping.values():
                for constraint in shadow.constraints:
                    live_item = self._declared.get(str(constraint.name))
                    if live_item is not None:
                        constraint.name = live_item.name
        for shadow in self._in_dependency_order():
            shadow.create(conn, checkfirst=True)  # a standalone Sequence exists: shared
        if conn.dialect.name == "postgresql":
            for shadow in self.mapping.values():
                for name, _ in _pg_dependents(conn, shadow):
                    if SHADOW_SUFFIX not in name or len(_canonical(name)) > _PG_NAME_LIMIT:
                        raise StoreError(
                            f"{shadow.name}: index or sequence {name!r} was truncated to "
                            f"{_PG_NAME_LIMIT} characters; give it a shorter name"
                        )

    def swap(self, conn: sa.Connection) -> list[str]:
        """Put every shadow in place of its live table (in ``conn``'s transaction); returns
        the old tables to drop after commit (none on SQLite, where they are dropped here)."""
        quote = conn.dialect.identifier_preparer.quote
        old_tables: list[str] = []
        views = _pg_views(conn, self.mapping) if conn.dialect.name == "postgresql" else []
        for live, shadow in self.mapping.items():
            live_sql = _table_sql(conn, live)
            shadow_sql = _table_sql(conn, shadow)
            if conn.dialect.name == "postgresql":
                _pg_copy_grants(conn, live, shadow)
                for name, kind in _pg_dependents(conn, live):
                    oid = conn.exec_driver_sql(
                        "SELECT %(name)s::regclass::oid", {"name": _qualified(conn, live, name)}
                    ).scalar_one()
                    conn.exec_driver_sql(
                        f"ALTER {kind} {_qualified(conn, live, name)} "
                        f"RENAME TO {quote(f'rm_old_{oid}')}"
                    )
                old = old_name(live.name)
                conn.exec_driver_sql(f"ALTER TABLE {live_sql} RENAME TO {quote(old)}")
                conn.exec_driver_sql(f"ALTER TABLE {shadow_sql} RENAME TO {quote(live.name)}")
                for name, kind in _pg_dependents(conn, live):
                    conn.exec_driver_sql(
                        f"ALTER {kind} {_qualified(conn, live, name)} "
                        f"RENAME TO {quote(self._live_name(conn, name, live))}"
                    )
                for name in _pg_table_constraints(conn, live):
                    if SHADOW_SUFFIX in name:
                        conn.exec_driver_sql(
                            f"ALTER TABLE {live_sql} RENAME CONSTRAINT {quote(name)} "
                            f"TO {quote(self._live_name(conn, name, live))}"
                        )
                old_tables.append(_qualified(conn, live, old))
            else:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {live_sql}")
                for index in shadow.indexes:
                    index.drop(conn)
                conn.exec_driver_sql(f"ALTER TABLE {shadow_sql} RENAME TO {quote(live.name)}")
                for index in live.indexes:
                    index.create(conn)
        for view, definition in views:  # now reading the new tables, which have the old names
            conn.exec_driver_sql(f"CREATE OR REPLACE VIEW {view} AS {definition}")
        return old_tables

    def leftovers(self, conn: sa.Connection) -> list[str]:
        """Shadow and old tables a previous (interrupted) replay left behind."""
        inspector = sa.inspect(conn)
        found = []
        for live, shadow in self.mapping.items():
            for name in (shadow.name, old_name(live.name)):
                if inspector.has_table(name, schema=live.schema):
                    found.append(_qualified(conn, live, name))
        return found

    def drop_leftovers(self, conn: sa.Connection) -> list[str]:
        found = self.leftovers(conn)
        drop_tables(conn, found)
        return found


def drop_tables(conn: sa.Connection, names: Iterable[str]) -> None:
    """Drop the tables; on PostgreSQL in one statement, whatever foreign keys join them."""
    names = list(names)
    if conn.dialect.name == "postgresql" and names:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {', '.join(names)}")
        return
    for name in names:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def _retarget_foreign_keys(
    live: sa.Table, shadow: sa.Table, mapping: dict[sa.Table, sa.Table]
) -> None:
    """Point the shadow's foreign keys at the shadows of the projection's tables they
    reference (at the tables themselves for tables outside the projection): a copied
    foreign key still names the live table, which is not in the shadow's metadata."""
    targets = {(fk.parent.name, fk.target_fullname): fk for fk in live.foreign_keys}
    for fk in shadow.foreign_keys:
        live_fk = targets.get((fk.parent.name, fk.target_fullname))
        if live_fk is None:
            continue
        column = live_fk.column
        target = mapping.get(column.table)
        fk._set_target_column(target.c[column.key] if target is not None else column)


def _table_sql(conn: sa.Connection, table: sa.Table) -> str:
    return conn.dialect.identifier_preparer.format_table(table)


def _qualified(conn: sa.Connection, table: sa.Table, name: str) -> str:
    quote = conn.dialect.identifier_preparer.quote
    return f"{quote(table.schema)}.{quote(name)}" if table.schema else quote(name)


_PG_DEPENDENTS = """
SELECT c.relname, 'INDEX' FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE i.indrelid = %(table)s::regclass
UNION ALL
SELECT c.relname, 'SEQUENCE' FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
 WHERE d.refobjid = %(table)s::regclass AND d.classid = 'pg_class'::regclass
   AND c.relkind = 'S' AND d.deptype IN ('a', 'i')
"""


def _pg_dependents(conn: sa.Connection, table: sa.Table) -> list[tuple[str, str]]:
    """Names (and kinds) of the indexes and owned sequences of ``table`` as it is named now."""
    rows = conn.exec_driver_sql(_PG_DEPENDENTS, {"table": _table_sql(conn, table)})
    return [(str(name), str(kind)) for name, kind in rows]


_PG_CONSTRAINTS = """
SELECT conname FROM pg_constraint WHERE conrelid = %(table)s::regclass AND contype IN ('c', 'f')
"""


def _pg_table_constraints(conn: sa.Connection, table: sa.Table) -> list[str]:
    """Names of the table's CHECK and foreign key constraints (per table, not relations:
    the index-backed ones are renamed with their indexes)."""
    rows = conn.exec_driver_sql(_PG_CONSTRAINTS, {"table": _table_sql(conn, table)})
    return [str(name) for (name,) in rows]


_PG_GRANTS = """
SELECT coalesce(quote_ident(r.rolname), 'PUBLIC'), a.privilege_type, a.is_grantable
  FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
  LEFT JOIN pg_roles r ON r.oid = a.grantee
 WHERE c.oid = %(relation)s::regclass
"""


def _pg_copy_grants(conn: sa.Connection, live: sa.Table, shadow: sa.Table) -> None:
    """Grant on the shadow table (and its sequences) what is granted on the live ones."""
    pairs = [(_table_sql(conn, live), _table_sql(conn, shadow), "TABLE")]
    shadow_sequences = _pg_column_sequences(conn, shadow)
    for column, sequence in _pg_column_sequences(conn, live).items():
        if column in shadow_sequences:
            pairs.append((sequence, shadow_sequences[column], "SEQUENCE"))
    for source, target, kind in pairs:
        for grantee, privilege, grantable in conn.exec_driver_sql(
            _PG_GRANTS, {"relation": source}
        ).all():
            option = " WITH GRANT OPTION" if grantable else ""
            conn.exec_driver_sql(f"GRANT {privilege} ON {kind} {target} TO {grantee}{option}")


_PG_COLUMN_SEQUENCES = """
SELECT a.attname, pg_get_serial_sequence(%(table)s, a.attname) FROM pg_attribute a
 WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
"""


def _pg_column_sequences(conn: sa.Connection, table: sa.Table) -> dict[str, str]:
    """Column name -> the (qualified) sequence it owns: serial and identity columns."""
    rows = conn.exec_driver_sql(_PG_COLUMN_SEQUENCES, {"table": _table_sql(conn, table)})
    return {str(column): str(sequence) for column, sequence in rows if sequence is not None}


_PG_VIEWS = """
SELECT DISTINCT v.oid::regclass::text, v.relkind::text, pg_get_viewdef(v.oid)
  FROM pg_depend d
  JOIN pg_rewrite r ON r.oid = d.objid
  JOIN pg_class v ON v.oid = r.ev_class
 WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
   AND d.refobjid = %(table)s::regclass AND r.ev_class <> d.refobjid
"""


def _pg_views(conn: sa.Connection, mapping: dict[sa.Table, sa.Table]) -> list[tuple[str, str]]:
    """``(name, definition)`` of the views reading the live tables; a materialized view,
    which cannot be redefined in place, is refused."""
    views: dict[str, str] = {}
    for live in mapping:
        if not sa.inspect(conn).has_table(live.name, schema=live.schema):
            continue
        for name, kind, definition in conn.exec_driver_sql(
            _PG_VIEWS, {"table": _table_sql(conn, live)}
        ).all():
            if kind == "m":
                raise StoreError(
                    f"materialized view {name} reads {live.name}: a rebuild would leave it on "
                    f"the old table; drop it (and create it again after the replay), or replay "
                    f"in place with --from-position"
                )
            views[str(name)] = str(definition).rstrip().rstrip(";")
    return sorted(views.items())
