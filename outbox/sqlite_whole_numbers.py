"""SQLite ``NUMERIC`` columns that keep whole numbers exactly.

SQLAlchemy binds every value of a ``Numeric`` column to SQLite as a float: a whole number
past 2**53 became its nearest double (2**53 + 1 was stored as 2**53, so two ids were one
row, and a get of one found the other's). SQLite's ``NUMERIC`` affinity keeps any integer
of 64 bits as an ``INTEGER``: :class:`SqliteWholeNumeric` binds a whole ``int``,
``Decimal`` or integer text of 64 bits as that ``int``, and reads an ``INTEGER`` back as
its exact ``Decimal`` (SQLAlchemy's ``"%.10f" % value`` went through a float too). Any
other value is bound as SQLAlchemy binds it (a float: a fraction, or a whole number past
64 bits, is kept as a double, as before). :func:`exact_whole_numbers` makes an engine's
``Numeric`` columns (not ``Float``) this type.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, Engine, processors

__all__ = ["SqliteWholeNumeric", "exact_whole_numbers", "whole_int"]

_LOW, _HIGH = -(2**63), 2**63
_DIGITS = 19  # adjusted() of 2**63 - 1: a Decimal of more digits before the point is past it
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d{1,20}\s*", re.ASCII)


def whole_int(value: Any) -> int | None:
    """``value`` as the ``int`` SQLite keeps when it is a whole number of 64 bits (an
    ``int``, not a ``bool``; a finite ``Decimal``; text of digits), else ``None``."""
    kind = type(value)
    if kind is int:
        number = value
    elif kind is Decimal:
        if not value.is_finite() or value.adjusted() >= _DIGITS or value != value.to_integral():
            return None
        number = int(value)
    elif kind is str and _INTEGER_TEXT.fullmatch(value):
        number = int(value)
    else:
        return None
    return number if _LOW <= number < _HIGH else None


class SqliteWholeNumeric(sa.Numeric):  # type: ignore[type-arg]
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        to_float = processors.to_float

        def process(value: Any) -> Any:
            number = whole_int(value)
            return to_float(value) if number is None else number

        return process

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        process = super().result_processor(dialect, coltype)
        if process is None:
            return None
        scale = self._effective_decimal_return_scale
        places = "." + "0" * scale if scale else ""

        def exact(value: Any) -> Any:
            if type(value) is int:
                return Decimal(f"{value}{places}")
            return process(value)

        return exact


def exact_whole_numbers(engine: Engine) -> None:
    """Bind and read ``engine``'s (SQLite) ``Numeric`` columns as
    :class:`SqliteWholeNumeric`; ``Float`` ones stay floats."""
    engine.dialect.colspecs = {
        **engine.dialect.colspecs,
        sa.Float: sa.Float,
        sa.Numeric: SqliteWholeNumeric,
    }
