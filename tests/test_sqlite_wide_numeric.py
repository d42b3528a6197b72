"""Whole numbers past 2**53 in a ``NUMERIC`` column (the key, and another column): SQLAlchemy
bound them to SQLite as doubles, so 2**53 + 1 was stored as 2**53, the two ids were one
row, a get of one read the other's, and its cache entry was the other's row. Each must stay
its own row, exact, in its batch as in a later one and through the cache; PostgreSQL, which
always kept them apart, is the reference."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from projections import Queries
from projections.query_values import key_value
from tests.cache_helpers import append, cached_runtime

LOW = 2**53  # 9007199254740992, a double
HIGH = 2**53 + 1  # 9007199254740993, no double: its nearest is LOW
TOP = 2**63 - 1  # the largest 64-bit integer


@pytest.fixture
def wide(store_url: str, make_settings: Callable[..., Any]) -> Iterator[tuple[Any, Queries]]:
    with cached_runtime(store_url, make_settings, "tests.wide_numeric_fixtures") as opened:
        yield opened


def _set(runtime: Any, *pairs: tuple[int, str]) -> None:
    append(runtime.log, "wide", [("wide", str(n), "ValueSet", {"value": v}) for n, v in pairs])
    runtime.engine.catch_up(["wide_numbers"])


def _get(queries: Queries, key: Any) -> Any:
    row = queries.get("wide_numbers", key, table="w_number").value
    # A query's row is JSON: a NUMERIC as its exact text.
    return None if row is None else (Decimal(row["id"]), Decimal(row["copy"]), row["value"])


def _stored(runtime: Any) -> list[tuple[Any, ...]]:
    with runtime.engine.store_of("wide_numbers").engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, copy, value FROM w_number ORDER BY value"))
        return [(Decimal(a), Decimal(b), v) for a, b, v in rows]


def test_two_ids_past_2_53_are_two_exact_rows(wide: tuple[Any, Queries]) -> None:
    runtime, _ = wide
    _set(runtime, (HIGH, "high"), (LOW, "low"))  # one batch
    _set(runtime, (TOP, "top"), (-HIGH, "minus"))
    assert _stored(runtime) == [
        (HIGH, HIGH, "high"),
        (LOW, LOW, "low"),
        (-HIGH, -HIGH, "minus"),
        (TOP, TOP, "top"),
    ]


def test_a_get_finds_its_own_row_in_its_batch_and_later(wide: tuple[Any, Queries]) -> None:
    runtime, _ = wide
    events = [("wide", str(HIGH), "ValueSet", {"value": "high"})]
    events += [("wide", str(LOW), "ValueSet", {"value": "low"})]
    events += [("wide", "in-batch", "Copy", {"of": str(HIGH)})]
    append(runtime.log, "wide", events)
    runtime.engine.catch_up(["wide_numbers"])
    append(runtime.log, "wide", [("wide", "later", "Copy", {"of": str(HIGH)})])
    runtime.engine.catch_up(["wide_numbers"])
    with runtime.engine.store_of("wide_numbers").engine.connect() as conn:
        seen = dict(conn.execute(sa.text("SELECT id, value FROM w_seen")).all())
    assert {name: Decimal(text.split("=")[0]) for name, text in seen.items()} == {
        "in-batch": HIGH,
        "later": HIGH,
    }
    assert {text.split("=")[1] for text in seen.values()} == {"high"}


@pytest.mark.parametrize("spell", [int, Decimal, str], ids=["int", "decimal", "text"])
def test_a_cached_get_reads_its_row_and_sees_its_event(
    wide: tuple[Any, Queries], spell: Callable[[int], Any]
) -> None:
    runtime, queries = wide
    _set(runtime, (HIGH, "high-1"), (LOW, "low-1"))
    for _ in range(2):  # a miss, then a hit
        assert _get(queries, spell(HIGH)) == (HIGH, HIGH, "high-1")
        assert _get(queries, spell(LOW)) == (LOW, LOW, "low-1")
    _set(runtime, (HIGH, "high-2"))
    assert _get(queries, spell(HIGH)) == (HIGH, HIGH, "high-2")
    assert _get(queries, spell(LOW)) == (LOW, LOW, "low-1")
    _set(runtime, (LOW, "low-2"))
    assert _get(queries, spell(LOW)) == (LOW, LOW, "low-2")
    assert _get(queries, spell(HIGH)) == (HIGH, HIGH, "high-2")


def test_a_cached_list_by_a_numeric_column_finds_one_row(wide: tuple[Any, Queries]) -> None:
    runtime, queries = wide
    _set(runtime, (HIGH, "high-1"), (LOW, "low-1"))

    def listed(number: int) -> list[str]:
        rows = queries.list("wide_numbers", {"copy": Decimal(number)}, table="w_number").rows
        return [row["value"] for row in rows]

    assert (listed(HIGH), listed(LOW)) == (["high-1"], ["low-1"])
    _set(runtime, (HIGH, "high-2"))
    assert (listed(HIGH), listed(LOW)) == (["high-2"], ["low-1"])


def test_a_whole_decimal_past_64_bits_is_kept_as_sqlite_keeps_it(
    wide: tuple[Any, Queries],
) -> None:
    """Past 64 bits SQLite has no integer: a ``NUMERIC`` keeps the nearest double (as README
    says), read back so in the batch as later; PostgreSQL keeps it exactly."""
    runtime, queries = wide
    past = 2**64 + 1
    append(runtime.log, "wide", [("wide", str(past), "ValueSet", {"value": "past"})])
    append(runtime.log, "wide", [("wide", "in-batch", "Copy", {"of": str(past)})])
    runtime.engine.catch_up(["wide_numbers"])
    sqlite = runtime.engine.store_of("wide_numbers").kind == "sqlite"
    kept = Decimal(float(past)) if sqlite else Decimal(past)
    assert [row[:2] for row in _stored(runtime)] == [(kept, kept)]
    assert _get(queries, Decimal(past)) == (kept, kept, "past")
    with runtime.engine.store_of("wide_numbers").engine.connect() as conn:
        (seen,) = conn.execute(sa.text("SELECT value FROM w_seen")).scalars()
    assert (Decimal(seen.split("=")[0]), seen.split("=")[1]) == (kept, "past")


@pytest.mark.parametrize(
    "spell",
    [int, Decimal, str, lambda n: Decimal(f"{n}.000")],
    ids=["int", "decimal", "text", "more-places"],
)
def test_a_cached_get_of_a_scaled_numeric_key_reads_its_row(
    wide: tuple[Any, Queries], spell: Callable[[int], Any]
) -> None:
    """A ``NUMERIC(30, 2)`` key: a whole number is kept exactly at any scale, and a key of
    more places than the scale finds the same row."""
    runtime, queries = wide
    _set(runtime, (HIGH, "high-1"), (LOW, "low-1"))

    def read(number: int) -> Any:
        row = queries.get("wide_numbers", spell(number), table="w_scaled").value
        return None if row is None else (Decimal(row["id"]), row["value"])

    assert (read(HIGH), read(LOW)) == ((HIGH, "high-1"), (LOW, "low-1"))
    _set(runtime, (HIGH, "high-2"))
    assert (read(HIGH), read(LOW)) == ((HIGH, "high-2"), (LOW, "low-1"))


@pytest.mark.parametrize("given", [2**62, Decimal(2**62), str(2**62)])
def test_a_whole_key_of_a_wide_scale_keeps_every_digit(given: Any) -> None:
    """A SQLite ``NUMERIC(38, 12)`` key of 19 digits: 31 at the scale, past Decimal's
    28-digit context (``quantize`` raised InvalidOperation: the get failed)."""
    column = sa.Column("id", sa.Numeric(38, 12), primary_key=True)
    assert key_value(column, given, "id", sqlite=True) == Decimal(f"{2**62}.{'0' * 12}")
