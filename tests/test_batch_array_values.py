"""PostgreSQL ``ARRAY`` columns: each element is kept as its item type's column keeps a value
(``[Decimal('0.5625')]`` in an ``ARRAY(Numeric(10, 2))`` reads ``[Decimal('0.56')]`` in its
batch as later), nested lists and ``None`` elements too; what the database or the driver
refuses is refused by the upsert, naming the column. Each expectation was checked against
the database (write, commit, read back)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from tests.batch_value_helpers import outcomes, problems, read_back, refused, store

_UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
_UTC = datetime.UTC
_DAY = datetime.timedelta(days=1)
R = "refused"

# column: (item type, [(value, what a later batch reads, or R)])
_ARRAYS: dict[str, tuple[Any, list[tuple[Any, Any]]]] = {
    "cents": (
        sa.Numeric(10, 2),
        [
            ([Decimal("0.5625")], [Decimal("0.56")]),
            ([0.5625, "1.005"], [Decimal("0.56"), Decimal("1.01")]),
            ([1, 2.5], [Decimal("1.00"), Decimal("2.50")]),  # one type once converted
            ([1, None], [Decimal("1.00"), None]),
            (
                [[Decimal("1.005"), 2], [3, None]],
                [[Decimal("1.01"), Decimal("2.00")], [Decimal("3.00"), None]],
            ),
            ((1, 2), [Decimal("1.00"), Decimal("2.00")]),
            ([], []),
            ([[None, None]], [[None, None]]),
            ([[1], [2, 3]], R),  # sub-arrays of unequal lengths
            ([[], []], R),
            ([1, [2]], R),
            ([True], R),
            ([Decimal("1E+20")], R),  # numeric field overflow
            (5, R),
            ("{1,2}", R),  # SQLAlchemy would send its characters
        ],
    ),
    "counts": (
        sa.Integer,
        [
            ([1.5, 2.5, "5", " 7 ", Decimal("2.5")], [2, 2, 5, 7, 3]),
            ([True, 1], [1, 1]),
            ([(1, 2), (3, None)], [[1, 2], [3, None]]),
            (["99999999999"], R),  # past 32 bits once read
            ([2**40], R),
        ],
    ),
    "codes": (
        sa.String(3),
        [
            (["abcd", "abc  ", 12345, "ab"], ["abc", "abc", "123", "ab"]),  # cast: cut
            (["a", 5, 2.5, True], ["a", "5", "2.5", "tru"]),  # one type once converted
            ([datetime.date(2024, 1, 2), Decimal("1.50")], ["202", "1.5"]),
        ],
    ),
    "fixed": (sa.CHAR(3), [(["ab", 5, "abc  "], ["ab ", "5  ", "abc"])]),
    "flags": (
        sa.Boolean,
        [([True, None, 0, 1], [True, None, False, True]), (["yes"], R), ([2], R)],
    ),
    "moments": (
        sa.DateTime(timezone=True),
        [
            (
                [datetime.datetime(2024, 1, 2, 3, 4), "2024-01-02 03:04+02"],
                [
                    datetime.datetime(2024, 1, 2, 3, 4, tzinfo=_UTC),
                    datetime.datetime(2024, 1, 2, 1, 4, tzinfo=_UTC),
                ],
            ),
            (["now"], R),
        ],
    ),
    "ids": (
        sa.Uuid,
        [([_UUID.upper(), uuid.UUID(_UUID)], [uuid.UUID(_UUID)] * 2), (["abc"], R)],
    ),
    "spans": (
        sa.Interval,
        [
            (["1 day", datetime.timedelta(hours=1)], [_DAY, datetime.timedelta(hours=1)]),
            (["infinity"], R),
        ],
    ),
    "letters": (
        sa.Enum("a", "b", name="batch_letters"),
        [(["a", None], ["a", None]), (["c"], R)],
    ),
}


def test_array_elements_read_in_their_batch_as_later_or_are_refused(
    pg_database: Callable[[], str],
) -> None:
    """An array was kept as written in its batch (``[Decimal('0.5625')]``, later
    ``[Decimal('0.56')]``); a list mixing types, a ragged or empty sub-array, a boolean in a
    numeric array failed at the flush (or, for ``'{1,2}'``, was sent character by character)."""
    metadata = sa.MetaData()
    table = sa.Table(
        "batch_arrays",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        *[sa.Column(name, sa.ARRAY(item)) for name, (item, _) in _ARRAYS.items()],
    )
    with store(pg_database(), metadata) as engine:
        found = {
            name: outcomes(engine, table, name, [value for value, _ in cases])
            for name, (_, cases) in _ARRAYS.items()
        }
    assert {name: problems(each) for name, each in found.items() if problems(each)} == {}
    for name, (_, cases) in _ARRAYS.items():
        expected = {repr(value): want for value, want in cases}
        assert read_back(found[name]) == {k: v for k, v in expected.items() if v is not R}
        assert set(refused(found[name])) == {k for k, v in expected.items() if v is R}, name
    messages = refused(found["cents"])
    assert (
        "item [1]: PostgreSQL takes no sub-arrays of unequal lengths" in messages["[[1], [2, 3]]"]
    )
    assert "item [0]: PostgreSQL casts no boolean" in messages["[True]"]
    assert "an ARRAY column takes a list" in messages["'{1,2}'"]
    wide = refused(found["counts"])["['99999999999']"]
    assert "item [0] is past the 32-bit integers an array of INTEGER holds" in wide, wide
    assert "99999999999" not in wide, wide  # never the value: it may be a secret
    assert "a boolean array takes True or False" in refused(found["flags"])["['yes']"]
