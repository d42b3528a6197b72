"""Text PostgreSQL's ``float8in`` / ``float4in`` read (glibc's ``strtod`` / ``strtof``) that the
upsert read otherwise: a signed NaN or ``nan(chars)`` (refused, where PostgreSQL stores NaN),
and text, integers or ``Decimal`` values near the midpoint of two single-precision floats,
which a ``real`` column rounds once, from the exact value (the upsert rounded to a double, then
to a single: the other neighbour, or infinity past the largest single). Each expectation was
checked against the database (write, commit, read back)."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from tests.batch_value_helpers import outcomes, problems, read_back, refused, store

_NANS = ["-nan", "+NaN", "nan(123)", " NAN(abc) ", "nan()"]
_NO_NANS = ["nan(a-b)", "nan( )", "+-nan"]
_MIDPOINT = 2**60 + 2**36  # midway between the singles 2**60 and 2**60 + 2**37
_NEAR_MIDPOINTS: list[Any] = [
    "4.4988920312500000000000000000000000000001e+5",  # just past a midpoint
    "9.1569128632545471191406250000000000000001e-1",
    "0x1.00000100000000001p0",  # past 1 + 2**-24
    "3.4028235677973366e38",  # just below the midpoint of the largest single and 2**128
    "7.0064923216240853546186479164495806564013097093825788587853414194489554134293030074331"
    "909418106079101563e-46",  # just past 2**-150: the least single, not zero
    _MIDPOINT + 1,
    -_MIDPOINT - 1,
    Decimal(_MIDPOINT + 1),
    "1.5",
    _MIDPOINT,  # a true tie: to even
]


def _check(database: str, values: dict[str, list[Any]]) -> dict[str, Any]:
    metadata = sa.MetaData()
    table = sa.Table(
        "float_texts",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("d", sa.Float),
        sa.Column("r", sa.REAL),
    )
    with store(database, metadata) as engine:
        found = {column: outcomes(engine, table, column, each) for column, each in values.items()}
    assert {column: problems(each) for column, each in found.items() if problems(each)} == {}
    return found


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_signed_nan_and_nan_with_chars_are_read_as_postgresql_reads_them(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """PostgreSQL stores NaN for '-nan' and 'nan(123)' (the upsert refused them as no float);
    SQLite stores NaN as NULL: refused, as 'NaN' is."""
    found = _check(database_for(kind), {"d": _NANS + _NO_NANS, "r": _NANS + _NO_NANS})
    for column in ("d", "r"):
        if kind == "postgresql":
            assert set(refused(found[column])) == set(map(repr, _NO_NANS)), column
            assert all(math.isnan(value) for value in read_back(found[column]).values())
        else:
            assert set(refused(found[column])) == set(map(repr, _NANS + _NO_NANS)), column


def test_a_real_column_rounds_text_integers_and_decimals_once_as_postgresql_does(
    pg_database: Callable[[], str],
) -> None:
    """Text just past a midpoint of two singles was read as the other single in its batch (a
    later batch read PostgreSQL's); '3.4028235677973366e38' and text just past 2**-150 were
    refused as out of range, where PostgreSQL stores the largest and the least single."""
    found = _check(pg_database(), {"r": _NEAR_MIDPOINTS})
    assert refused(found["r"]) == {}
    stored = read_back(found["r"])
    assert stored[repr(_NEAR_MIDPOINTS[4])] > 0
    assert stored[repr(_MIDPOINT + 1)] > stored[repr(_MIDPOINT)]


def test_a_real_value_is_read_in_its_batch_with_the_digits_postgresql_prints(
    pg_database: Callable[[], str],
) -> None:
    """The upsert printed a single with the fewest digits read back as it, counting digits
    midway to a neighbour (read back by ties to even): 254848992.0 was 254849000.0 in its
    batch, 254848990.0 (float4out's '2.5484899e+08') in a later one."""
    singles = [254848992.0, 1757784064.0, 46338272.0, 7893791744.0, 0.1, 16777217.0]
    found = _check(pg_database(), {"r": singles})
    assert refused(found["r"]) == {}
