"""Numbers as a store keeps them: the converters :mod:`projections.sql_values` gives number
columns (and PostgreSQL arrays of them), so a handler reads in its batch what a later batch
reads back.

The conversions follow what PostgreSQL (through psycopg) and SQLite (through SQLAlchemy's
processors) were observed to return (``tests/test_batch_values.py`` checks each against the
database):

- PostgreSQL ``NUMERIC(p, s)``: rounded to ``s`` places, half away from zero (``NUMERIC(p)``
  is scale 0); a float is first taken with 15 significant digits (``float8_numeric``). A
  value needing more than ``p - s`` digits before the point once rounded is refused
  ("numeric field overflow"), as is a boolean (into any number column but ``INTEGER``).
- PostgreSQL integers: a float rounds half to even (``rint``), a ``Decimal`` half away from
  zero, a string of digits is parsed.
- SQLite ``NUMERIC``: a whole number of 64 bits is bound as an integer and read back as its
  exact ``Decimal`` (:mod:`outbox.sqlite_whole_numbers`); any other value SQLAlchemy binds as
  a float and reads ``Decimal("%.<scale>f" % value)`` (scale 10 when the type has none), and
  the column's affinity keeps an integral one as an integer.
- SQLite integers: an integral float or a numeric string becomes an integer; other values
  are kept as they are (SQLite's type affinity). A ``Decimal``, which the driver cannot
  bind, becomes an integer as on PostgreSQL (half away from zero); NaN or infinity is
  refused naming the column (:class:`~projections.api.UnstorableValueError`).
- Floats: an integer or ``Decimal`` is read back as a float (``REAL`` on PostgreSQL: as the
  nearest single-precision value, printed shortest); text, and a ``Decimal`` (its range), as
  PostgreSQL reads it, or refused (:mod:`projections.sql_float_text`); a zero ``Decimal`` as
  0.0 (``numeric`` has no negative zero). A float a ``REAL`` column would make infinity or
  zero is refused, as PostgreSQL's cast of the ``double precision`` psycopg sends refuses it
  ("value out of range: overflow", "underflow"). A float column read as ``Decimal``
  (``asdecimal``) keeps no negative zero: the ``numeric`` sent has none. SQLite float and
  ``NUMERIC`` columns refuse bytes (:func:`~projections.sql_value_kinds.sqlite_float_kind`).
- A subclass or foreign number (an ``IntEnum`` member, a numpy scalar) is converted as the
  plain number it stands for (:mod:`projections.sql_plain_values`); ``Decimal('sNaN')`` is
  refused, and on PostgreSQL a NaN with a sign or a payload (``Decimal('-NaN')``), which
  PostgreSQL refuses as psycopg sends it (``-NaN``) where plain NaN is stored. SQLite refuses
  every NaN (its converters: :mod:`projections.sql_sqlite_numbers`).

A value a converter does not know is left as it is (the flush stores or refuses it); one no
column keeps as written is refused (:class:`~projections.sql_limits.Unstorable`), naming the
column where :mod:`projections.sql_values` turns it into an error.
"""

from __future__ import annotations

import math
import re
import struct
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, ROUND_HALF_UP, Context, Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from projections.sql_float_text import decimal_float, midway, nearest_single, pg_float_text
from projections.sql_limits import Unstorable, UnstorableWide
from projections.sql_other_values import Converter
from projections.sql_plain_values import ODD_NAN, SIGNALLING_NAN, odd_nan, plain
from projections.sql_value_kinds import no_number

__all__ = ["decimal_integer", "integer_text", "postgresql_number"]

NONE = type(None)
INT64 = 2**63
PG_INTEGER = re.compile(r"\s*[+-]?\d+\s*", re.ASCII)
NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", re.ASCII)
# What numeric_in and float8in also read (any case): NaN, infinities.
_SPECIAL = re.compile(r"\s*(nan|[+-]?inf(inity)?)\s*", re.ASCII | re.IGNORECASE)
# Wider than what any PostgreSQL reads as a number (16 also reads 1_000, 0x1F, 0o17, 0b1):
# text it does not match is read by none, refused at the upsert (text without a digit too:
# '', blanks, '.').
_ANY_NUMBER = re.compile(
    r"(?=.*\d)\s*[+-]?(0[xob][0-9a-f_]+|[0-9_]*\.?[0-9_]*(e[+-]?[0-9_]+)?)\s*",
    re.ASCII | re.IGNORECASE,
)
_NOT_A_NUMBER = "PostgreSQL reads no number from this text (invalid input syntax)"
_NAN = Decimal("NaN")
NO_INTEGER = "an integer column holds no NaN or infinity"


# -- PostgreSQL ------------------------------------------------------------------------


def postgresql_number(
    dialect: Dialect, column_type: sa.types.TypeEngine[Any]
) -> tuple[Converter, frozenset[type]] | None:
    if isinstance(column_type, sa.Float):
        sql = column_type.compile(dialect=dialect).upper()
        single = sql == "REAL" or (
            sql.startswith("FLOAT(")
            and column_type.precision is not None
            and column_type.precision <= 24
        )
        to_float = _pg_real if single else _pg_double
        if column_type.asdecimal:
            scale = column_type._effective_decimal_return_scale
            return _then(to_float, float, _decimal_places(scale)), frozenset({NONE})
        return to_float, frozenset({NONE} if single else {float, NONE})
    if isinstance(column_type, sa.Numeric):
        scale = column_type.scale
        if scale is None and column_type.precision is not None:
            scale = 0  # NUMERIC(p) is NUMERIC(p, 0)
        to_decimal = _pg_numeric(scale, column_type.precision)
        if not column_type.asdecimal:
            return _then(to_decimal, Decimal, float), frozenset({NONE})
        return to_decimal, frozenset({NONE})
    if isinstance(column_type, sa.Integer):
        # PostgreSQL casts a boolean to INTEGER (int4) on assignment, to no other integer.
        if column_type.compile(dialect=dialect).upper() == "INTEGER":
            return _pg_int4, frozenset({int, NONE})
        return _pg_bigint, frozenset({int, NONE})
    return None


_FLOAT_PRECISION = re.compile(r"FLOAT\((\d+)\)")
_single: dict[tuple[str, sa.types.TypeEngine[Any]], bool] = {}


def pg_single_precision(dialect: Dialect, column_type: sa.types.TypeEngine[Any]) -> bool:
    """Whether a PostgreSQL column of ``column_type`` is a ``real`` (``REAL``, or ``FLOAT(p)``
    with ``p <= 24``): compared with a parameter psycopg sends as a double, it is widened to
    one, so ``0.1`` finds no row it holds unless the parameter is cast to ``real``."""
    key = (dialect.name, column_type)
    found = _single.get(key)
    if found is None:
        sql = column_type.compile(dialect=dialect).upper()
        precision = _FLOAT_PRECISION.fullmatch(sql)
        found = sql == "REAL" or (precision is not None and int(precision.group(1)) <= 24)
        _single[key] = found
    return found


def _pg_numeric(scale: int | None, precision: int | None) -> Converter:
    """``NUMERIC(precision, scale)`` (``precision`` given: no infinity, and at most
    ``precision - scale`` digits before the point once rounded, else "numeric field
    overflow")."""
    exponent = None if scale is None else Decimal(1).scaleb(-scale)
    limit = None if precision is None else Decimal(1).scaleb(precision - (scale or 0))
    # A Decimal already at the scale fits when it has fewer digits before the point.
    digits = MAX_EMAX if precision is None else precision - (scale or 0)

    def convert(value: Any) -> Any:
        kind = type(value)
        if (
            kind is Decimal
            and exponent is not None
            and value.same_quantum(exponent)  # finite, at the scale
            and value.adjusted() < digits
            and (value or not value.is_signed())  # no negative zero
        ):
            return value
        try:
            if kind is Decimal:
                number = value
            elif kind is int:
                number = Decimal(value)
            elif kind is float:
                if not math.isfinite(value):
                    number = Decimal(value)
                else:
                    number = Decimal(f"{value:.15g}")  # float8_numeric: DBL_DIG digits
            elif kind is str and (NUMBER.fullmatch(value) or _SPECIAL.fullmatch(value)):
                number = Decimal(value.strip())
            elif kind is str and not _ANY_NUMBER.fullmatch(value):
                raise Unstorable(_NOT_A_NUMBER)
            elif kind is bool:
                raise Unstorable(_NO_BOOLEAN_NUMBER)
            else:
                other = plain(value)
                return no_number(value) if other is value else convert(other)
            if number.is_nan():
                if number.is_snan():
                    raise Unstorable(SIGNALLING_NAN)
                if kind is Decimal and odd_nan(number):
                    raise Unstorable(ODD_NAN)
                return _NAN
            if number.is_infinite():
                if limit is not None:
                    raise Unstorable("a NUMERIC(p, s) column holds no infinity")
                return number
            # copy_abs: exact, where abs() rounds to the thread's context (28 digits).
            if limit is not None and number.copy_abs() >= limit:  # before rounding
                _overflow(precision, scale)
            if exponent is not None:
                number = number.quantize(exponent, ROUND_HALF_UP, WIDE_CONTEXT)
            elif number.as_tuple().exponent > 0:  # type: ignore[operator]
                number = number.quantize(1, context=WIDE_CONTEXT)  # PostgreSQL writes 1E+2 as 100
            if limit is not None and number.copy_abs() >= limit:  # 99.995 is 100.00
                _overflow(precision, scale)
        except (InvalidOperation, ValueError):
            return value
        return number if number else number.copy_abs()  # no negative zero

    return convert


def _overflow(precision: int | None, scale: int | None) -> NoReturn:
    digits = (precision or 0) - (scale or 0)
    raise Unstorable(
        f"numeric field overflow: a NUMERIC({precision}, {scale or 0}) column holds less than "
        f"10^{digits} in magnitude once rounded to {scale or 0} places"
    )


# Wide enough for any NUMERIC(p, s) (p at most 1000) and PostgreSQL's unbounded numeric.
WIDE_CONTEXT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
_NO_BOOLEAN_NUMBER = "PostgreSQL casts no boolean to a number column: write 1 or 0"
_NO_INTEGER_TEXT = "PostgreSQL reads no integer from this text (write the number, rounded)"


_FAR_PAST_64_BITS = 100  # an exponent from which no integer column could hold the value


def decimal_integer(value: Decimal) -> int:
    """``value`` rounded half away from zero, as PostgreSQL rounds it into an integer column;
    refused before it is written out as an ``int`` when far past what any integer column holds
    (a Decimal of exponent 3,000,000 takes minutes to write out); nearer ones are refused by
    the column's bounds, naming the column."""
    if value.adjusted() >= _FAR_PAST_64_BITS:
        raise UnstorableWide("it is past 64 bits: no integer column holds it")
    return int(value.to_integral_value(ROUND_HALF_UP))


def _pg_integer(value: Any, again: Converter) -> Any:
    """``value`` into an integer column; ``again``: the column's converter, given the plain
    value of a foreign one (``numpy.bool_`` is a ``bool``, which only INTEGER takes)."""
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            raise Unstorable(NO_INTEGER)
        return round(value)  # rint: half to even
    if kind is Decimal:
        if not value.is_finite():
            raise Unstorable(NO_INTEGER)
        return decimal_integer(value)
    if kind is str:
        if PG_INTEGER.fullmatch(value):
            return integer_text(value)
        if NUMBER.fullmatch(value) or _SPECIAL.fullmatch(value):
            raise Unstorable(_NO_INTEGER_TEXT)
        if not _ANY_NUMBER.fullmatch(value):
            raise Unstorable(_NOT_A_NUMBER)
        return value
    other = plain(value)
    return no_number(value) if other is value else again(other)


def integer_text(text: str) -> int:
    """The integer of ``text`` (digits, a sign, blanks: as ``int8in`` reads it); refused when
    far past 64 bits, before Python reads it (at most 4,300 digits: a ValueError); nearer ones
    are refused by the column's bounds, naming the column."""
    text = text.strip()
    sign = "-" if text[0] == "-" else ""
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > _FAR_PAST_64_BITS:
        raise UnstorableWide("it is past 64 bits: no integer column holds it")
    return int(sign + (digits or "0"))


def _pg_bigint(value: Any) -> Any:
    """BIGINT and SMALLINT: PostgreSQL casts a boolean to ``INTEGER`` only."""
    if type(value) is bool:
        raise Unstorable(_NO_BOOLEAN_NUMBER)
    return _pg_integer(value, _pg_bigint)


def _pg_int4(value: Any) -> Any:
    return int(value) if type(value) is bool else _pg_integer(value, _pg_int4)


def _pg_double(value: Any) -> Any:
    kind = type(value)
    if kind is bool:
        raise Unstorable(_NO_BOOLEAN_NUMBER)
    if kind is str:
        return pg_float_text(value)
    if kind is int or kind is Decimal:
        if kind is Decimal and odd_nan(value):
            raise Unstorable(ODD_NAN)  # psycopg sends a numeric, which PostgreSQL refuses
        try:
            number = float(value)
        except (OverflowError, ValueError):
            if kind is Decimal and value.is_snan():
                raise Unstorable(SIGNALLING_NAN) from None
            return value
        if kind is Decimal and (not number or math.isinf(number)) and value.is_finite():
            return decimal_float(value, False)  # a zero's sign, or past the range
        return number
    if kind is float:
        return value
    other = plain(value)
    return no_number(value) if other is value else _pg_double(other)


def _pg_real(value: Any) -> Any:
    """The nearest single-precision value, as PostgreSQL prints it (shortest digits)."""
    if isinstance(value, str):
        single = pg_float_text(value, True)
        if not math.isfinite(single):
            return single
    else:
        number = _pg_double(value)
        if type(number) is not float:
            return value
        if not math.isfinite(number):
            return number
        # An integer or Decimal is cast from its exact value (int8 -> real, numeric_float4).
        exact = plain(value)
        if type(exact) is Decimal:
            single = decimal_float(exact, True)
        elif type(exact) is int:
            single = nearest_single(number, lambda: Fraction(exact))
        else:  # psycopg sends a float as double precision: its cast to real (dtof) refuses
            single = nearest_single(number, lambda: Fraction(number))
            if not single and number:
                raise Unstorable(_PAST_SINGLE)  # underflow
        if math.isinf(single):
            raise Unstorable(_PAST_SINGLE)  # overflow (an integer past int8 is numeric: too)
    for digits in range(1, 10):
        shortest = float(f"{single:.{digits}g}")
        # Not a midpoint, though read as ``single`` (ties to even): float4out prints digits
        # strictly nearer ``single`` than its neighbours (254848992 as 2.5484899e+08).
        if _SINGLE.unpack(_SINGLE.pack(shortest))[0] == single and not midway(shortest):
            return shortest
    return single


_SINGLE = struct.Struct("f")
_PAST_SINGLE = (
    "PostgreSQL refuses it: value out of range for type real (as a single-precision float "
    "it is infinity or zero)"
)


def _then(first: Converter, kind: type, second: Converter) -> Converter:
    """``first``, then ``second`` when that gave a ``kind`` (else the value is left to the
    flush)."""

    def convert(value: Any) -> Any:
        converted = first(value)
        return second(converted) if type(converted) is kind else converted

    return convert


def _decimal_places(scale: int) -> Converter:
    def convert(value: float) -> Decimal:
        number = Decimal(f"{value:.{scale}f}")
        # Sent as numeric, which has no negative zero: -0.0 (or -1e-12) is read back as 0E-10.
        return number if number else number.copy_abs()

    return convert
