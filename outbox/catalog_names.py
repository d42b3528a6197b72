"""Tables looked up as the database's catalog holds their names, and made when missing.

A name declared ``quote=False`` (SQLAlchemy's ``quoted_name``: ``sa.Table("OrderTotals",
..., quote=False)``, ``schema="Reports", quote_schema=False``) is sent unquoted, and
PostgreSQL folds an unquoted name to lower case: the table is made as
``reports.ordertotals``. SQLAlchemy's ``create(checkfirst=True)`` looks it up by the name
as declared (``Reports``/``OrderTotals``), finds nothing, and makes it again: the second
start of a store failed "already exists". :func:`create_missing` looks it up by the
catalog's names instead, and has SQLAlchemy look up the types and sequences it would make
with it in such a schema (an enum type in the table's schema, a ``Sequence`` in it) by the
folded schema name too: the first replay of such a table failed making its shadow (``type
"mood" already exists``). A type or sequence whose own name is declared ``quote=False``
with capitals (``sa.Enum(..., name="Movement", quote=False)``, ``sa.Sequence("Tick",
quote=False)``) is looked up by its folded name as well (:func:`fold_checks`): it was made
again by a shadow, a dry run's copy, or a start making a table added to the model that
takes it, and failed ``type "movement" already exists``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# Every check ``checkfirst=True`` makes (sequences, PostgreSQL types) but the table's own,
# made by :func:`create_missing`. SQLAlchemy 2.0 has no such flags: there its own check of
# the table runs too (it can only miss a table, and this one was found missing already).
_ALL_BUT_TABLES = sa.CheckFirst.ALL & ~sa.CheckFirst.TABLES if hasattr(sa, "CheckFirst") else True


def catalog_name(name: str) -> str:
    """``name`` as the catalog holds it: a name declared ``quote=False`` (SQLAlchemy's
    ``quoted_name``) is sent unquoted, which PostgreSQL folds to lower case (ASCII letters,
    as it folds a UTF-8 identifier); any other is kept as written (SQLite, which matches
    names without case, takes either)."""
    if getattr(name, "quote", None) is False:
        return str(name).translate(_ASCII_LOWER)
    return str(name)


def catalog_schema(table: sa.Table) -> str | None:
    """``table``'s schema as the catalog holds it (:func:`catalog_name`); ``None``: none."""
    return None if table.schema is None else catalog_name(table.schema)


def table_exists(conn: sa.Connection, table: sa.Table) -> bool:
    """Whether ``table`` exists, looked up by its catalog names (as SQLAlchemy's check does:
    a view counts; without a schema, one the search path finds)."""
    return bool(
        conn.dialect.has_table(conn, catalog_name(table.name), schema=catalog_schema(table))
    )


def create_missing(conn: sa.Connection, table: sa.Table) -> None:
    """``table.create(conn, checkfirst=True)``, whose check of the table looks it up by its
    catalog names (:func:`table_exists`), and whose checks of the types and sequences made
    with it look them up in their schemas as the catalog names them (:func:`_folded`)."""
    if table_exists(conn, table):
        return
    if conn.dialect.name == "postgresql":
        fold_checks(conn.dialect)
    folded = _folded(table) if conn.dialect.name == "postgresql" else {}
    if not folded:
        table.create(conn, checkfirst=_ALL_BUT_TABLES)
        return
    # Set on the connection itself (execution_options does not copy a Connection): put back.
    previous = conn.get_execution_options().get("schema_translate_map")
    conn.execution_options(schema_translate_map={**(previous or {}), **folded})
    try:
        table.create(conn, checkfirst=_ALL_BUT_TABLES)
    finally:
        conn.execution_options(schema_translate_map=previous)


def fold_checks(dialect: sa.Dialect) -> None:
    """Have a PostgreSQL ``dialect``'s checks of a type and of a sequence (``has_type``,
    ``has_sequence``: what ``create(checkfirst=True)`` asks before making one) look a name
    declared ``quote=False`` up as the catalog holds it (:func:`catalog_name`). SQLAlchemy
    passes them the name as declared, and has no hook to map names (as
    ``schema_translate_map`` maps schemas): the dialect instance gets the folding checks,
    once. Any other name is looked up as before, so the checks stay right for every caller.
    """
    if getattr(dialect, "_readmodel_folds_names", False):
        return
    has_type, has_sequence = dialect.has_type, dialect.has_sequence

    def folded_has_type(conn: Any, type_name: str, schema: str | None = None, **kw: Any) -> bool:
        return bool(has_type(conn, catalog_name(type_name), schema, **kw))

    def folded_has_sequence(
        conn: Any, sequence_name: str, schema: str | None = None, **kw: Any
    ) -> bool:
        return bool(has_sequence(conn, catalog_name(sequence_name), schema, **kw))

    dialect.has_type = folded_has_type  # type: ignore[method-assign]
    dialect.has_sequence = folded_has_sequence  # type: ignore[method-assign]
    dialect._readmodel_folds_names = True  # type: ignore[attr-defined]


def _folded(table: sa.Table) -> dict[str, str]:
    """``{declared: catalog's}`` for the schemas declared ``quote_schema=False`` with capitals
    that ``table``, its columns' types and sequences are in: as a ``schema_translate_map``,
    what SQLAlchemy's checks (``has_type``, ``has_sequence``) look up, and what its DDL
    names (the same schema: PostgreSQL folds it alike). Left out: a spelling that also
    names a schema declared quoted (``"Reports"``, another schema)."""
    schemas = [table.schema]
    for column in table.columns:
        schemas.append(getattr(column.type, "schema", None))
        if isinstance(column.default, sa.Sequence):
            schemas.append(column.default.schema)
    folded: dict[str, str] = {}
    kept: set[str] = set()
    for schema in schemas:
        if schema is None:
            continue
        if catalog_name(schema) != str(schema):
            folded[str(schema)] = catalog_name(schema)
        else:
            kept.add(str(schema))
    return {declared: name for declared, name in folded.items() if declared not in kept}
