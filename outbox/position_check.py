"""The outbox's position column must be unique: the relay acknowledges rows by position.

A claimed row is deleted or marked by ``position IN (...)``, so rows sharing a position
value with a claimed row (a ``created_at`` mapped as position) would be acknowledged with
it although never claimed: lost events. The catalog must show a primary key or a unique
index or constraint whose only column is the position column.
"""

from __future__ import annotations

from typing import Any

from config import OutboxTableSettings
from outbox.errors import SourceConfigError


def _only(columns: Any, position: str) -> bool:
    names = [c for c in columns or () if c is not None]
    return len(names) == 1 and len(columns) == 1 and names[0].lower() == position.lower()


def position_is_unique(
    inspector: Any, described: list[dict[str, Any]], settings: OutboxTableSettings
) -> bool:
    """Whether the catalog makes the position column of the outbox table (whose columns
    are ``described``) unique on its own; ``False`` too when it has no such column."""
    table, schema, position = settings.table, settings.schema_name, settings.columns.position
    if not any(c["name"].lower() == position.lower() for c in described):
        return False
    primary = inspector.get_pk_constraint(table, schema=schema)
    if _only(primary.get("constrained_columns"), position):
        return True
    for constraint in inspector.get_unique_constraints(table, schema=schema):
        if _only(constraint.get("column_names"), position):
            return True
    for index in inspector.get_indexes(table, schema=schema):
        if not index.get("unique") or not _only(index.get("column_names"), position):
            continue
        options = index.get("dialect_options") or {}
        if any(key.endswith("_where") and value for key, value in options.items()):
            continue  # a partial index: unique among some rows only
        return True
    return False


def not_unique(source: str, table: str, position: str) -> SourceConfigError:
    """The refusal of a source whose position column is not unique."""
    return SourceConfigError(
        f"position column {position!r} of table {table!r} (source {source!r}) is not "
        "unique: rows sharing a value would be acknowledged together, "
        "some never relayed; map position to the table's unique ordering column (a "
        "sequence/identity)"
    )
