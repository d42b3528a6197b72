"""The names a blue/green rebuild (:mod:`projections.shadow`) gives its tables and their
indexes, constraints and sequences: ``<table>__rebuild`` for a shadow, ``<table>__old`` for
a live table the swap has replaced, each cut short with a hash of the whole name when it
would pass PostgreSQL's 63 bytes; and the SQL text that names a table or one of its objects.

That text has one form, the one the database reads (a ``%`` in a name is one ``%``): it is
passed as a parameter to catalog queries (``%(table)s::regclass``, ``to_regclass``), and the
statements that embed it, or text the catalog gave, are sent unformatted (:func:`run`).

The names derived from a table's or an index's start from the name the catalog holds
(:func:`~outbox.catalog_names.catalog_name`: one declared ``quote=False`` folded): as plain
text they would be quoted, keeping a case the live object does not have.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from outbox.catalog_names import catalog_name

SHADOW_SUFFIX = "__rebuild"
OLD_SUFFIX = "__old"
DRY_RUN_SUFFIX = "__dry_run"
PG_NAME_LIMIT = 63
_SHADOW_TABLE_LIMIT = 47
_PERCENT_STYLES = ("format", "pyformat")


def shadow_name(name: str, suffix: str = SHADOW_SUFFIX) -> str:
    return fitted(catalog_name(name), suffix, _SHADOW_TABLE_LIMIT)


def old_name(name: str) -> str:
    return fitted(catalog_name(name), OLD_SUFFIX, PG_NAME_LIMIT)


def leftover_name(name: str, oid: int) -> str:
    """The name an old table an earlier replay left (``old_name``) takes at the next swap,
    which needs ``old_name`` again: unique by its oid."""
    return fitted(catalog_name(name), f"{OLD_SUFFIX}_{oid}", PG_NAME_LIMIT)


def fitted(name: str, suffix: str, limit: int) -> str:
    """``name + suffix``, or within ``limit`` bytes: the start of ``name`` and its hash."""
    if len(f"{name}{suffix}".encode()) <= limit:
        return f"{name}{suffix}"
    digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    tail = f"_{digest}{suffix}"
    start = name
    while len(f"{start}{tail}".encode()) > limit:
        start = start[:-1]
    return f"{start}{tail}"


def signature(item: sa.Index | sa.Constraint, table: str) -> tuple[Any, ...]:
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


def canonical(name: str, suffix: str = SHADOW_SUFFIX) -> str:
    return name.replace(suffix, "", 1)


def quote(conn: sa.Connection, name: str) -> str:
    """``name`` as SQL (quoted when it must be), as the database reads it: both as statement
    text sent by :func:`run` and as a parameter (``%(table)s::regclass``). The dialect's
    own quoting doubles a ``%`` for psycopg's placeholders, which names no table as a
    parameter; statements sent by :func:`run` are not formatted, so none is doubled."""
    quoted = conn.dialect.identifier_preparer.quote(name)
    return quoted.replace("%%", "%") if conn.dialect.paramstyle in _PERCENT_STYLES else quoted


def quoter(conn: sa.Connection) -> Callable[[str], str]:
    return lambda name: quote(conn, name)


def table_sql(conn: sa.Connection, table: sa.Table) -> str:
    return qualified(conn, table, table.name)


def qualified(conn: sa.Connection, table: sa.Table, name: str) -> str:
    if table.schema:
        return f"{quote(conn, table.schema)}.{quote(conn, name)}"
    return quote(conn, name)


def run(conn: sa.Connection, statement: str) -> sa.CursorResult[Any]:
    """Send ``statement`` as it is: not formatted for parameters, so that a ``%`` in a name
    (:func:`quote`) or in text the catalog gave (a view's, an index's definition) is one."""
    return conn.exec_driver_sql(statement, execution_options={"no_parameters": True})
