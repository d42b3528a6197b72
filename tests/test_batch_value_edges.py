"""Values at the edges of what a column holds: each is kept by the upsert as the database
stores it (read alike in its batch and in a later one) or refused there naming the column.
Each expectation was checked against the database (write, commit, read back)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, localcontext
from typing import Any

import pytest
import sqlalchemy as sa

from tests.batch_value_helpers import outcomes, problems, read_back, refused, store

_NINES_30 = 10**30 - 1
_WIDE: list[Any] = [
    _NINES_30,
    -_NINES_30,
    str(_NINES_30),
    Decimal(f"{_NINES_30}.0"),
    Decimal(f"{_NINES_30}.4"),
    10**30,
    str(10**30),
    Decimal(f"{_NINES_30}.5"),  # 10^30 once rounded
]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_numeric_wider_than_the_decimal_context_is_bounded_exactly(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """The bound of a NUMERIC(p, s) with p over 28 was compared in the thread's decimal
    context (28 digits): 10^30 - 1 was rounded to 10^30 and refused as an overflow, though
    PostgreSQL stores it."""
    metadata = sa.MetaData()
    table = sa.Table(
        "wide_numbers",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("n30", sa.Numeric(30, 0)),
        sa.Column("n40", sa.Numeric(40, 10)),
    )
    with store(database_for(kind), metadata) as engine:
        with localcontext(prec=28):
            n30 = outcomes(engine, table, "n30", _WIDE)
            n40 = outcomes(engine, table, "n40", _WIDE)
    assert problems(n30) == [] and problems(n40) == []
    if kind == "sqlite":
        return  # SQLite keeps no precision: what matters is the batch reads as later
    nines = Decimal(_NINES_30)
    assert read_back(n30) == {
        repr(_NINES_30): nines,
        repr(-_NINES_30): Decimal(-_NINES_30),
        repr(str(_NINES_30)): nines,
        repr(Decimal(f"{_NINES_30}.0")): nines,
        repr(Decimal(f"{_NINES_30}.4")): nines,
    }
    over = {repr(10**30), repr(str(10**30))}
    assert set(refused(n30)) == {*over, repr(_WIDE[-1])}  # 10^30 once rounded
    assert set(refused(n40)) == over
    for message in [*refused(n30).values(), *refused(n40).values()]:
        assert "numeric field overflow" in message, message
    assert read_back(n40)[repr(_NINES_30)] == Decimal(f"{_NINES_30}.0000000000")
    assert read_back(n40)[repr(str(_NINES_30))] == Decimal(f"{_NINES_30}.0000000000")
    assert read_back(n40)[repr(_WIDE[-1])] == Decimal(f"{_NINES_30}.5000000000")
