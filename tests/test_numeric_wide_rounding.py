"""A ``NUMERIC(p, s)`` key is rounded as PostgreSQL rounds it on a write, however many digits
it has: the server's NUMERIC holds up to 1000, where Python's default decimal context rounds
to 28 (a key of 29 digits or more after rounding was sent unrounded, and found no row)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbox.db import libpq_conninfo
from projections.numeric_scale import at_scale

_digits = st.text("0123456789", min_size=1, max_size=45).map(lambda d: d.lstrip("0") or "0")
_wide = st.builds(
    lambda sign, whole, places: Decimal(f"{sign}{whole}.{places}" if places else f"{sign}{whole}"),
    st.sampled_from(["", "-"]),
    _digits,
    st.text("0123456789", max_size=14),
)


def _server_rounds(dsn: str, values: list[Decimal], scale: int) -> list[Decimal]:
    with psycopg.connect(libpq_conninfo(dsn)) as conn:
        rows = conn.execute(
            f"SELECT CAST(v AS numeric(1000, {scale}))::text FROM unnest(%s::text[]) "
            "WITH ORDINALITY AS t(v, n) ORDER BY n",
            ([str(v) for v in values],),
        ).fetchall()
    return [Decimal(text) for (text,) in rows]


def test_a_key_of_31_digits_is_rounded_half_away_from_zero() -> None:
    for sign in ("", "-"):
        given = Decimal(f"{sign}1234567890123456789012345678901.125")
        assert str(at_scale(given, 2, sqlite=False)) == f"{sign}1234567890123456789012345678901.13"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(_wide, min_size=1, max_size=40), scale=st.integers(0, 12))
def test_wide_keys_round_as_the_server_stores_them(
    database_for: Callable[[str], str], values: list[Decimal], scale: int
) -> None:
    dsn = database_for("postgresql")
    ours = [at_scale(value, scale, sqlite=False) for value in values]
    assert ours == _server_rounds(dsn, values, scale)
    assert [str(a) for a in ours] == [str(b) for b in _server_rounds(dsn, values, scale)]
