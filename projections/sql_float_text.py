"""Text into a float column, read as PostgreSQL's ``float8in`` / ``float4in`` read it.

Observed on PostgreSQL 15 (``tests/test_batch_value_refusals.py``): blanks around a decimal
number, ``NaN`` and the infinities (any case, ``inf`` or ``infinity``), and C's hexadecimal
floats (``0x1.8p3``) are read, and so are glibc's signed NaN and ``nan(chars)`` (``-nan``,
``nan(0x1)``: NaN); a number past the type's range, or one so small it would be
read as zero, is refused ("out of range", but a written zero such as ``0e-400``); any other
text is refused ("invalid input syntax"). Both failed the whole batch at the flush:
:func:`pg_float_text` refuses them at the upsert (:class:`~projections.sql_limits.Unstorable`,
naming the column there). SQLite float columns take what PostgreSQL's double precision takes,
as the same float (Python's ``float()`` reads ``1_000`` and full-width digits, which
PostgreSQL refuses, and no hexadecimal).

A ``real`` column's value is the single-precision number nearest the text (``strtof``), not the
one nearest its nearest double: rounding twice moved text near the midway point of two single
floats to the wrong one (:func:`nearest_single`, which integers and ``Decimal`` values also
take: PostgreSQL casts them to ``real`` from their exact value).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

from projections.sql_limits import Unstorable

__all__ = ["decimal_float", "midway", "nearest_single", "pg_float_text"]

_DECIMAL = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", re.ASCII)
_SPECIAL = re.compile(r"\s*[+-]?(nan(\(\w*\))?|inf(inity)?)\s*", re.ASCII | re.IGNORECASE)
_HEX = re.compile(r"\s*[+-]?0x([0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)(p[+-]?\d+)?\s*", re.I | re.A)
_SINGLE = struct.Struct("f")
_NOT_A_FLOAT = "PostgreSQL reads no float from this text (invalid input syntax)"


def pg_float_text(text: str, single: bool = False) -> float:
    """The float PostgreSQL reads from ``text`` for a ``double precision`` column (``single``:
    a ``real`` one: the single-precision float nearest the text)."""
    found = _DECIMAL.fullmatch(text)
    decimal = found is not None
    if found is not None:
        number = float(text)
        mantissa = found.group(1)
    elif _SPECIAL.fullmatch(text):
        return float(text.strip().partition("(")[0])
    else:
        found = _HEX.fullmatch(text)
        if found is None:
            raise Unstorable(_NOT_A_FLOAT)
        mantissa = found.group(1)
        try:
            number = float.fromhex(text)
        except OverflowError:
            number = math.inf
    if single and math.isfinite(number):
        number = nearest_single(number, lambda: _exact(text, decimal))
    if math.isinf(number) or (not number and mantissa.strip("0.")):
        sql = "real" if single else "double precision"
        raise Unstorable(f"PostgreSQL refuses it: out of range for type {sql}")
    return number


def decimal_float(value: Decimal, single: bool) -> float:
    """A finite ``Decimal`` cast to ``double precision`` (``real``: ``single``) as PostgreSQL
    casts the ``numeric`` psycopg sends: ``float8in`` (``float4in``) of its text, the nearest
    float, refused when that is infinity or zero ("out of range"); a zero of either sign is
    0.0 (``numeric`` has no negative zero). ``float()`` of a ``Decimal`` rounds its exact
    value once, as ``strtod`` does; a single is rounded from it as ``strtof`` would."""
    if not value:
        return 0.0
    number = float(value)
    if single:
        number = nearest_single(number, lambda: Fraction(value))
    if number and not math.isinf(number):
        return number
    sql = "real" if single else "double precision"
    raise Unstorable(f"PostgreSQL refuses it: out of range for type {sql}")


def nearest_single(number: float, exact: Callable[[], Fraction]) -> float:
    """The single-precision float nearest the value ``exact()`` returns, ``number`` being the
    double nearest it (infinity past the single range). ``exact`` is called only when
    ``number`` lies midway between two single floats: rounding it again could then pick the
    wrong one (ties go to the even one; the value itself may be past the midpoint)."""
    try:
        single: float = _SINGLE.unpack(_SINGLE.pack(number))[0]
    except OverflowError:
        single = math.copysign(math.inf, number)
    if single == number or not math.isfinite(number):
        return single
    if not midway(number):
        return single  # rounding twice rounds as once
    value = exact()
    if value == Fraction(number):
        return single  # a true tie: to even, as the C cast does
    half = math.ldexp(1.0, _spacing(number) - 1)
    toward = number + half if value > Fraction(number) else number - half
    return math.copysign(math.inf, toward) if abs(toward) >= 2.0**128 else toward


def midway(number: float) -> bool:
    """Whether the finite ``number`` lies midway between two single-precision floats."""
    halves = math.ldexp(number, 1 - _spacing(number))
    return halves.is_integer() and int(halves) % 2 == 1


def _spacing(number: float) -> int:
    """The exponent of the spacing of single-precision floats near ``number``."""
    return max(math.frexp(number)[1] - 24, -149)


def _exact(text: str, decimal: bool) -> Fraction:
    """The exact value of a decimal or hexadecimal float ``text`` that matched its pattern."""
    text = text.strip()
    if decimal:
        return Fraction(Decimal(text))
    sign = -1 if text[0] == "-" else 1
    body = text.lstrip("+-")[2:].lower()
    body, _, power = body.partition("p")
    whole, _, fraction = body.partition(".")
    mantissa = Fraction(int(whole + fraction or "0", 16), 16 ** len(fraction))
    return sign * mantissa * Fraction(2) ** int(power or "0")
