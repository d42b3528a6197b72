"""The names a blue/green rebuild (:mod:`projections.shadow`) gives its tables and their
indexes, constraints and sequences: ``<table>__rebuild`` for a shadow, ``<table>__old`` for
a live table the swap has replaced, each cut short with a hash of the whole name when it
would pass PostgreSQL's 63 bytes; and the SQL text that names a table or one of its objects.
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa

SHADOW_SUFFIX = "__rebuild"
OLD_SUFFIX = "__old"
PG_NAME_LIMIT = 63
_SHADOW_TABLE_LIMIT = 47


def shadow_name(name: str, suffix: str = SHADOW_SUFFIX) -> str:
    return fitted(name, suffix, _SHADOW_TABLE_LIMIT)


def old_name(name: str) -> str:
    return fitted(name, OLD_SUFFIX, PG_NAME_LIMIT)


def leftover_name(name: str, oid: int) -> str:
    """The name an old table an earlier replay left (``old_name``) takes at the next swap,
    which needs ``old_name`` again: unique by its oid."""
    return fitted(name, f"{OLD_SUFFIX}_{oid}", PG_NAME_LIMIT)


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


def table_sql(conn: sa.Connection, table: sa.Table) -> str:
    return conn.dialect.identifier_preparer.format_table(table)


def qualified(conn: sa.Connection, table: sa.Table, name: str) -> str:
    quote = conn.dialect.identifier_preparer.quote
    return f"{quote(table.schema)}.{quote(name)}" if table.schema else quote(name)
