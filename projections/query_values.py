"""A query's values as a column's types: a filter or key given as text or as JSON
(:class:`JsonValue`), read as the column's Python type at the column's scale.

Separate from the SQL reader (:mod:`projections.query_reader`): the document reader, the
``@query`` argument checks and the CLI read values the same way.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from projections.numeric_scale import at_scale, numeric_scale
from projections.query_errors import QueryError


@dataclass(frozen=True, slots=True)
class JsonValue:
    """A filter value given as JSON (``readmodel query --where field:=JSON``): ``value`` as
    parsed (exact: an ``int``, a :class:`~decimal.Decimal` for a number with a fraction or
    an exponent; a KEY's ``{"$oid": HEX}`` an ObjectId), ``text`` as given. Unlike a Python
    value, which is sent as it is (text read as the column's type), it must suit its column:
    ``7`` is refused for a text one."""

    value: Any
    text: str


def plain_value(value: Any) -> Any:
    """``value`` without its :class:`JsonValue` wrapping, a JSON number with a fraction as a
    ``float`` when that is the same number (``0.1``: what a JSON payload stores), else as the
    exact :class:`~decimal.Decimal`; a Python value as it is."""
    return json_number(value.value) if isinstance(value, JsonValue) else value


def json_number(value: Any) -> Any:
    """``value`` with each :class:`~decimal.Decimal` in it as a ``float`` when that is the
    same number (``0.1``, as a JSON payload is stored), else as it is."""
    if isinstance(value, Decimal):
        number = float(value)
        return number if math.isfinite(number) and Decimal(repr(number)) == value else value
    if isinstance(value, list):
        return [json_number(item) for item in value]
    if isinstance(value, dict):
        return {key: json_number(item) for key, item in value.items()}
    return value


def coerce(column: sa.Column[Any], value: Any, *, sqlite: bool = False) -> Any:
    """A value from the command line or a cursor (text) as the column's Python type; a
    whole number as ``int`` in an integer column (``42.0`` finds row 42: one spelling per
    row, so the cache key and tag of ``42.0`` are those an event of row 42 invalidates).
    ``sqlite``: a NUMERIC value is rounded as a SQLite store rounds it (see
    :func:`_canonical_decimal`)."""
    if isinstance(value, float | Decimal) and _integer_column(column):
        return _whole(value)
    if isinstance(value, Decimal):
        return _canonical_decimal(column, value, sqlite)
    if value is None or not isinstance(value, str):
        return value
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return value
    try:
        if python_type is bool:
            if value.lower() in ("true", "1", "yes", "t"):
                return True
            if value.lower() in ("false", "0", "no", "f"):
                return False
            raise ValueError(value)
        if python_type is Decimal:
            return _canonical_decimal(column, Decimal(value), sqlite)
        if python_type in (int, float, uuid.UUID):
            return python_type(value)
        if python_type is datetime:
            return datetime.fromisoformat(value)
        if python_type is date:
            return date.fromisoformat(value)
        if python_type is time:
            return time.fromisoformat(value)
        if python_type in (timedelta, bytes, dict, list):
            raise QueryError(
                f"column {column.name!r}: {python_type.__name__} values cannot be given as text"
            )
    except (ValueError, ArithmeticError):
        raise QueryError(
            f"column {column.name!r}: {value!r} is not a valid {python_type.__name__}"
        ) from None
    return value


def filter_value(
    column: sa.Column[Any], value: Any, hint: str | None = None, *, sqlite: bool = False
) -> Any:
    """A filter's value as the column's Python type: a :class:`JsonValue` only when it is of
    the column's kind (a JSON number for a number column, ``true``/``false`` for a boolean
    one); anything else as :func:`coerce` reads it (text as the column's type). ``hint``
    says how to give the value otherwise (a ``--where`` filter's by default)."""
    if isinstance(value, JsonValue):
        hint = hint or f"give text as {column.name}=VALUE"
        return _json_value(column, value, hint, sqlite)
    return coerce(column, value, sqlite=sqlite)


def key_value(column: sa.Column[Any], value: Any, hint: str, *, sqlite: bool = False) -> Any:
    """A primary key's value as :func:`filter_value` reads it, but a float in a NUMERIC column
    as the exact decimal it spells (``0.1``, not the double's 0.1000000000000000055...):
    PostgreSQL would compare the column as a double, finding rows the key's cache tag
    (``price:0.1``) is not the tag of."""
    if isinstance(value, float) and math.isfinite(value) and _python_type(column) is Decimal:
        value = Decimal(repr(value))
    return filter_value(column, value, hint, sqlite=sqlite)


def sqlite_wall_time(column: sa.Column[Any], value: Any) -> Any:
    """A key's aware datetime as the wall time a SQLite naive ``DateTime`` column stores and
    compares (its offset dropped: ``12:00+02:00`` finds the row ``12:00`` there): one cache
    entry, and the tags of the row found, whichever way the key is spelled."""
    if (
        isinstance(value, datetime)
        and value.tzinfo is not None
        and isinstance(column.type, sa.DateTime)
        and not column.type.timezone
    ):
        return value.replace(tzinfo=None)
    return value


def _python_type(column: sa.Column[Any]) -> Any:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def _json_value(column: sa.Column[Any], given: JsonValue, hint: str, sqlite: bool) -> Any:
    value = given.value
    if value is None:
        return None
    if isinstance(value, str):
        return coerce(column, value, sqlite=sqlite)
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return value
    number = not isinstance(value, bool) and isinstance(value, int | Decimal)
    if isinstance(value, dict | list):
        if python_type in (dict, list):
            return value
    elif python_type is bool:
        if isinstance(value, bool):
            return value
    elif python_type is int:  # no row holds an integer past 64 bits: refused as such
        if number and -(2**63) <= value < 2**63 and value == value // 1:
            return int(value)
    elif python_type is float:
        if number:
            return float(value)
    elif python_type is Decimal:
        if number:
            return _canonical_decimal(column, Decimal(value), sqlite)
    raise QueryError(
        f"column {column.name!r}: {given.text.strip()} is not a valid "
        f"{python_type.__name__} ({hint})"
    )


def _integer_column(column: sa.Column[Any]) -> bool:
    try:
        return column.type.python_type is int
    except NotImplementedError:
        return False


def _whole(value: float | Decimal) -> int | float | Decimal:
    """``value`` as an ``int`` when it is a whole number (no row of an integer column holds
    anything else: a fraction is kept, and finds nothing)."""
    try:
        return int(value) if value == int(value) else value
    except (OverflowError, ValueError, ArithmeticError):  # inf, nan
        return value


def _canonical_decimal(column: sa.Column[Any], value: Decimal, sqlite: bool = False) -> Decimal:
    """``value`` at the column's scale (``1.5`` -> ``1.50`` for NUMERIC(10, 2)), rounded as a
    write of it is stored (:mod:`projections.numeric_scale`: ``0.125`` is ``0.13`` on
    PostgreSQL, ``0.12`` on SQLite), so a key finds the row the same key wrote: one spelling
    per row, for cache keys and tags alike."""
    scale = numeric_scale(column.type, sqlite)
    if scale is None or not value.is_finite():
        return value
    return at_scale(value, scale, sqlite)
