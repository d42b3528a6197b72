"""Key columns the database compares otherwise than Python, and the keys that compare as it does.

:class:`projections.sql_tx.SqlTx` files a batch's writes and reads in dicts under their keys,
so a batch finds two keys one row when Python finds them equal. Where a key column's
database finds otherwise, its key converter gives keys of a ``str`` or ``time`` subclass equal
as the database finds them, sent as the value they are:

- ``"timetz"``: PostgreSQL ``Time(timezone=True)``, one row per time and offset
  (:mod:`projections.sql_zoned_keys`);
- ``"folded"``: PostgreSQL ``citext``, SQLite ``COLLATE NOCASE``, one row whatever the case
  of ASCII letters (:mod:`projections.sql_folded_keys`).

Decided once per table: tables without such a key column pay nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from projections.sql_folded_keys import folded, folded_key
from projections.sql_zoned_keys import zoned, zoned_key

if TYPE_CHECKING:
    from projections.sql_values import Column

__all__ = ["as_keyed", "compared", "keyed"]


def compared(dialect_name: str, column_type: sa.types.TypeEngine[Any]) -> str | None:
    """How a key column of ``column_type`` (its type on the dialect) compares keys where
    Python does otherwise: ``"timetz"``, ``"folded"`` or ``None``."""
    if dialect_name == "postgresql":
        if isinstance(column_type, sa.Time) and column_type.timezone:
            return "timetz"
        if isinstance(column_type, postgresql.CITEXT):
            return "folded"
    elif dialect_name == "sqlite" and isinstance(column_type, sa.String):
        if (column_type.collation or "").upper() == "NOCASE":
            return "folded"
    return None


def as_keyed(how: str | None) -> Callable[[Any], Any] | None:
    """What a value read back is as a key of a column comparing so (``None``: itself)."""
    return zoned if how == "timetz" else folded if how == "folded" else None


def keyed(column: Column | None, how: str | None) -> Column | None:
    """A key column's converter, giving keys equal as a column comparing so finds them."""
    if how is None or column is None or column.convert is None:
        return column
    if how == "timetz":
        return column._replace(convert=zoned_key(column.convert))
    return column._replace(convert=folded_key(column.convert), exact=column.exact - {str})
