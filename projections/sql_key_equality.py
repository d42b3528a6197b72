"""Key columns the database compares otherwise than Python, and the keys that compare as it does.

:class:`projections.sql_tx.SqlTx` files a batch's writes and reads in dicts under their keys,
so a batch finds two keys one row when Python finds them equal. Where a key column's
database finds otherwise, its key converter gives keys of a ``str`` or ``time`` subclass equal
as the database finds them, sent as the value they are:

- ``"timetz"``: PostgreSQL ``Time(timezone=True)``, one row per time and offset
  (:mod:`projections.sql_zoned_keys`);
- ``"folded"``: PostgreSQL ``citext``, SQLite ``COLLATE NOCASE``, one row whatever the case
  of ASCII letters; ``"trimmed"``: SQLite ``COLLATE RTRIM``, whatever the trailing blanks
  (:mod:`projections.sql_folded_keys`).

Decided once per table: tables without such a key column pay nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from projections.sql_folded_keys import folded, folded_key, trimmed, trimmed_key
from projections.sql_zoned_keys import zoned, zoned_key

if TYPE_CHECKING:
    from projections.sql_values import Column

__all__ = ["as_keyed", "compared", "keyed"]


def compared(dialect_name: str, column_type: sa.types.TypeEngine[Any]) -> str | None:
    """How a key column of ``column_type`` (its type on the dialect) compares keys where
    Python does otherwise: ``"timetz"``, ``"folded"``, ``"trimmed"`` or ``None``."""
    if dialect_name == "postgresql":
        if isinstance(column_type, sa.Time) and column_type.timezone:
            return "timetz"
        if isinstance(column_type, postgresql.CITEXT):
            return "folded"
    elif dialect_name == "sqlite" and isinstance(column_type, sa.String):
        return _SQLITE_COLLATIONS.get((column_type.collation or "").upper())
    return None


_SQLITE_COLLATIONS = {"NOCASE": "folded", "RTRIM": "trimmed"}
_AS_KEYED = {"timetz": zoned, "folded": folded, "trimmed": trimmed}
_KEYS = {"timetz": zoned_key, "folded": folded_key, "trimmed": trimmed_key}


def as_keyed(how: str | None) -> Callable[[Any], Any] | None:
    """What a value read back is as a key of a column comparing so (``None``: itself)."""
    return None if how is None else _AS_KEYED[how]


def keyed(column: Column | None, how: str | None) -> Column | None:
    """A key column's converter, giving keys equal as a column comparing so finds them."""
    if how is None or column is None or column.convert is None:
        return column
    convert = _KEYS[how](column.convert)
    if how == "timetz":
        return column._replace(convert=convert)
    return column._replace(convert=convert, exact=column.exact - {str})  # every text keyed
