"""What a PostgreSQL text column holds of a value psycopg sends as another type.

psycopg sends a number, boolean, ``Decimal``, date, datetime, time or ``timedelta`` as its
own type, and the server stores the text it prints (``float8out``'s shortest digits,
``true``, a timestamp in the session's time zone); a tuple, list, dict, bytes or set is
refused. Separate from :mod:`projections.sql_other_values` (which picks a column's
converter) because these are PostgreSQL's output functions, re-done in Python.
"""

from __future__ import annotations

import enum
import math
import sys
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from projections.pg_clock_text import clock_text, offset_text, timestamp_text
from projections.sql_limits import Unstorable, UnstorableWide
from projections.sql_plain_values import ODD_NAN, SIGNALLING_NAN, odd_nan, plain
from projections.sql_text_values import NUL_TEXT

Converter = Callable[[Any], Any]


def _pg_text(zone: tzinfo) -> Converter:
    """What a text column holds of a value psycopg sends as another type (its output)."""

    def convert(value: Any) -> Any:
        kind = type(value)
        if kind is int:
            try:
                return str(value)
            except ValueError:
                raise UnstorableWide(_TOO_MANY_DIGITS) from None
        if kind is bool:
            return "true" if value else "false"
        if kind is float:
            return _pg_float_text(value)
        if kind is Decimal:
            return _pg_numeric_text(value)
        if kind is datetime:
            if value.tzinfo is None:
                return timestamp_text(value)
            try:
                local = value.astimezone(zone)
            except (OverflowError, ValueError):
                return value
            return timestamp_text(local) + offset_text(local.utcoffset())
        if kind is date:
            return value.isoformat()
        if kind is uuid.UUID:
            return str(value)
        if isinstance(value, time | timedelta):
            return clock_text(value)
        if kind is set or kind is frozenset:
            raise Unstorable(
                f"psycopg sends no {kind.__name__}: write str() or json.dumps() of it (of a list "
                "of it, sorted: a set has no order)"
            )
        if kind in _NOT_TEXT:
            raise Unstorable(
                f"psycopg sends a {kind.__name__} as {_NOT_TEXT[kind]}, not as text (the "
                "statement stores its text form or fails): write str() or json.dumps() of it"
            )
        if isinstance(value, str):
            if "\x00" in value:
                raise Unstorable(NUL_TEXT)
            return str.__str__(value)  # a str subclass (a StrEnum member): its plain text
        other = plain(value)
        if other is value and isinstance(value, enum.Enum):
            return convert(value.name)  # psycopg sends a member's name (not its value)
        return value if other is value else convert(other)

    return convert


_TOO_MANY_DIGITS = (
    f"Python writes integers of at most {sys.get_int_max_str_digits()} digits as text (psycopg "
    "sends it as text): write it in parts, or raise sys.set_int_max_str_digits()"
)
_NOT_TEXT = {
    tuple: "a record",
    list: "an array",
    dict: "no type",
    bytes: "bytea",
    bytearray: "bytea",
    memoryview: "bytea",
}


def _pg_float_text(value: float) -> str:
    """``float8out``: the shortest digits that read back as ``value``, in exponent form below
    1e-4 and from 1e15 (Python's ``repr`` switches at 1e16 and writes ``1.0``)."""
    if not math.isfinite(value):
        return "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    text = "".join(map(str, digits))
    point = len(text) + exponent  # type: ignore[operator]
    magnitude = point - 1
    if -4 <= magnitude < 15:
        if point <= 0:
            text = "0." + "0" * -point + text
        elif point < len(text):
            text = text[:point] + "." + text[point:]
        else:
            text = text + "0" * (point - len(text))
    else:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        text = f"{mantissa}e{'-' if magnitude < 0 else '+'}{abs(magnitude):02d}"
    return "-" + text if sign else text


def _pg_numeric_text(value: Decimal) -> Any:
    if value.is_nan():
        if value.is_snan():
            raise Unstorable(SIGNALLING_NAN)
        if odd_nan(value):
            raise Unstorable(ODD_NAN)
        return "NaN"
    if value.is_infinite():
        return "Infinity" if value > 0 else "-Infinity"
    exponent = value.as_tuple().exponent
    if not -16383 <= exponent <= 131072:  # type: ignore[operator]
        return value  # beyond numeric: the flush refuses it
    text = format(value, "f")
    return text[1:] if text.startswith("-") and not value else text  # no negative zero
