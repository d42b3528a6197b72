"""Shadow copies of a projection's tables for a blue/green rebuild, and the swap.

A shadow table is named ``<table>__rebuild``; every index, constraint and sequence of
it carries ``__rebuild`` in its name too, so a shadow never collides with its live table,
and the swap can give each object the name the live one had (the name minus the suffix).
On PostgreSQL the swap renames the live table to ``<table>__old`` (its indexes and
sequences to ``rm_old_<oid>``) and the shadow to the live name, in the caller's
transaction; the old tables are dropped after commit. SQLite has no ``ALTER INDEX
RENAME``: there the live table is dropped inside the swap transaction and the shadow's
named indexes are recreated under the live names.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from outbox.errors import StoreError

SHADOW_SUFFIX = "__rebuild"
OLD_SUFFIX = "__old"
_PG_NAME_LIMIT = 63


def shadow_name(name: str) -> str:
    return f"{name}{SHADOW_SUFFIX}"


def _suffixed(name: str) -> str:
    return name if SHADOW_SUFFIX in name else shadow_name(name)


def _canonical(name: str) -> str:
    return name.replace(SHADOW_SUFFIX, "", 1)


class ShadowTables:
    """The shadow copy of each of a projection's tables (logical table -> shadow table)."""

    def __init__(self, tables: Iterable[sa.Table]) -> None:
        self.mapping: dict[sa.Table, sa.Table] = {}
        for table in tables:
            metadata = sa.MetaData(naming_convention=dict(table.metadata.naming_convention))
            shadow = table.to_metadata(metadata, name=shadow_name(table.name))
            for index in shadow.indexes:
                if index.name is not None:
                    index.name = _suffixed(str(index.name))
            for constraint in shadow.constraints:
                if isinstance(constraint.name, str):
                    constraint.name = _suffixed(constraint.name)
            self.mapping[table] = shadow

    def names(self) -> list[str]:
        return [shadow.name for shadow in self.mapping.values()]

    def create(self, conn: sa.Connection) -> None:
        for shadow in self.mapping.values():
            shadow.create(conn)
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
        for live, shadow in self.mapping.items():
            live_sql = _table_sql(conn, live)
            shadow_sql = _table_sql(conn, shadow)
            if conn.dialect.name == "postgresql":
                for name, kind in _pg_dependents(conn, live):
                    oid = conn.exec_driver_sql(
                        "SELECT %(name)s::regclass::oid", {"name": _qualified(conn, live, name)}
                    ).scalar_one()
                    conn.exec_driver_sql(
                        f"ALTER {kind} {_qualified(conn, live, name)} "
                        f"RENAME TO {quote(f'rm_old_{oid}')}"
                    )
                old = f"{live.name}{OLD_SUFFIX}"
                conn.exec_driver_sql(f"ALTER TABLE {live_sql} RENAME TO {quote(old)}")
                conn.exec_driver_sql(f"ALTER TABLE {shadow_sql} RENAME TO {quote(live.name)}")
                for name, kind in _pg_dependents(conn, live):
                    conn.exec_driver_sql(
                        f"ALTER {kind} {_qualified(conn, live, name)} "
                        f"RENAME TO {quote(_canonical(name))}"
                    )
                old_tables.append(_qualified(conn, live, old))
            else:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {live_sql}")
                for index in shadow.indexes:
                    index.drop(conn)
                conn.exec_driver_sql(f"ALTER TABLE {shadow_sql} RENAME TO {quote(live.name)}")
                for index in live.indexes:
                    index.create(conn)
        return old_tables

    def leftovers(self, conn: sa.Connection) -> list[str]:
        """Shadow and old tables a previous (interrupted) replay left behind."""
        inspector = sa.inspect(conn)
        found = []
        for live, shadow in self.mapping.items():
            for name in (shadow.name, f"{live.name}{OLD_SUFFIX}"):
                if inspector.has_table(name, schema=live.schema):
                    found.append(_qualified(conn, live, name))
        return found

    def drop_leftovers(self, conn: sa.Connection) -> list[str]:
        found = self.leftovers(conn)
        for name in found:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        return found


def drop_tables(conn: sa.Connection, names: Iterable[str]) -> None:
    for name in names:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


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
