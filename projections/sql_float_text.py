"""Text into a float column, read as PostgreSQL's ``float8in`` / ``float4in`` read it.

Observed on PostgreSQL 15 (``tests/test_batch_value_refusals.py``): blanks around a decimal
number, ``NaN`` and the infinities (any case, ``inf`` or ``infinity``), and C's hexadecimal
floats (``0x1.8p3``) are read; a number past the type's range, or one so small it would be
read as zero, is refused ("out of range", but a written zero such as ``0e-400``); any other
text is refused ("invalid input syntax"). Both failed the whole batch at the flush:
:func:`pg_float_text` refuses them at the upsert (:class:`~projections.sql_limits.Unstorable`,
naming the column there). SQLite float columns take what PostgreSQL's double precision takes,
as the same float (Python's ``float()`` reads ``1_000`` and full-width digits, which
PostgreSQL refuses, and no hexadecimal).
"""

from __future__ import annotations

import math
import re
import struct

from projections.sql_limits import Unstorable

__all__ = ["pg_float_text"]

_DECIMAL = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", re.ASCII)
_SPECIAL = re.compile(r"\s*(nan|[+-]?inf(inity)?)\s*", re.ASCII | re.IGNORECASE)
_HEX = re.compile(r"\s*[+-]?0x([0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)(p[+-]?\d+)?\s*", re.I | re.A)
_SINGLE = struct.Struct("f")
_NOT_A_FLOAT = "PostgreSQL reads no float from this text (invalid input syntax)"


def pg_float_text(text: str, single: bool = False) -> float:
    """The float PostgreSQL reads from ``text`` for a ``double precision`` column (``single``:
    a ``real`` one: the value is then rounded to single precision by its caller)."""
    found = _DECIMAL.fullmatch(text)
    if found is not None:
        number = float(text)
        mantissa = found.group(1)
    elif _SPECIAL.fullmatch(text):
        return float(text)
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
        try:
            number = _SINGLE.unpack(_SINGLE.pack(number))[0]
        except OverflowError:
            number = math.inf
    if math.isinf(number) or (not number and mantissa.strip("0.")):
        sql = "real" if single else "double precision"
        raise Unstorable(f"PostgreSQL refuses it: out of range for type {sql}")
    return number
