"""A key of a ``NUMERIC(10, 2)`` column given with more places than the column keeps
(``0.125``) is rounded as the store rounds it on a write: PostgreSQL half away from zero
(``0.125`` is the row ``0.13``), SQLite through the double SQLAlchemy binds (``0.125`` is
``0.12``, ``0.165`` is ``0.17``: the doubles of ``0.145`` and ``1.005`` lie below the half).
A cached get by that key then finds the row the same key wrote, shares the entry of the
row's own spelling, and reads an update once an event of the row is applied, whether the
event's aggregate id is the row's spelling or the one with more places; a handler's
``tx.get`` by it finds the row an earlier event of its batch wrote. PostgreSQL's
``NUMERIC(10)`` is scale 0; SQLite keeps a ``NUMERIC`` without a scale as the double."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from projections import Queries
from tests.cache_helpers import append, cached_runtime, redis_keys

_OFF_SCALE = ["0.125", "-0.125", "0.145", "0.165", "1.005"]
_STORED = {
    "postgresql": {"0.125": "0.13", "-0.125": "-0.13", "0.145": "0.15", "0.165": "0.17"}
    | {"1.005": "1.01"},
    "sqlite": {"0.125": "0.12", "-0.125": "-0.12", "0.145": "0.14", "0.165": "0.17"}
    | {"1.005": "1.00"},
}


@pytest.fixture
def scaled(
    store_url: str, make_settings: Callable[..., Any]
) -> Iterator[tuple[Any, Queries, dict[str, str]]]:
    """A cached runtime, its queries, and what its store keeps of each key of _OFF_SCALE."""
    stored = _STORED["sqlite" if store_url.startswith("sqlite") else "postgresql"]
    with cached_runtime(store_url, make_settings, "tests.scaled_key_fixtures") as opened:
        yield *opened, stored


def _set(runtime: Any, events: list[tuple[str, str, str]]) -> None:
    """Apply ``(aggregate id, key, value)`` events of ``price`` aggregates, in one batch."""
    rows = [("price", agg, "PriceSet", {"key": key, "value": v}) for agg, key, v in events]
    append(runtime.log, "keys", rows)
    assert runtime.engine.catch_up(["scaled_keys"]) == len(events)


def _read(queries: Queries, key: Any) -> Any:
    row = queries.get("scaled_keys", key, table="s_price").value
    return None if row is None else row["value"]


def _rows(queries: Queries) -> dict[str, tuple[str, str | None]]:
    rows = queries.list("scaled_keys", table="s_price").rows
    return {row["id"]: (row["value"], row["before"]) for row in rows}


def test_postgresql_rounds_numeric_half_away_from_zero(database_for: Callable[[str], str]) -> None:
    """What the server itself stores of each key (the table the other tests expect)."""
    engine = sa.create_engine(
        sa.make_url(database_for("postgresql")).set(drivername="postgresql+psycopg")
    )
    try:
        with engine.connect() as conn:
            stored = {
                text: conn.execute(
                    sa.text("SELECT CAST(:v AS numeric(10, 2))::text"), {"v": text}
                ).scalar_one()
                for text in _OFF_SCALE
            }
    finally:
        engine.dispose()
    assert stored == _STORED["postgresql"]


@pytest.mark.parametrize("given", _OFF_SCALE)
def test_a_key_off_the_scale_finds_the_row_it_wrote_and_reads_its_update(
    scaled: tuple[Any, Queries, dict[str, str]], given: str
) -> None:
    runtime, queries, stored_of = scaled
    stored = stored_of[given]
    _set(runtime, [(given, given, "v1")])
    assert _rows(queries) == {stored: ("v1", None)}
    spellings: list[Any] = [given, Decimal(given), stored, Decimal(stored)]
    assert [_read(queries, key) for key in spellings] == ["v1"] * len(spellings)
    entries = redis_keys(f"{runtime.engine.cache.prefix}e:scaled_keys:get:s_price:")
    assert len(entries) == 1, entries
    _set(runtime, [(stored, given, "v2")])  # an event of the row (its aggregate id: the row's)
    assert [_read(queries, key) for key in spellings] == ["v2"] * len(spellings)


@pytest.mark.parametrize("given", _OFF_SCALE)
def test_a_handler_finds_by_a_key_off_the_scale_the_row_its_batch_wrote(
    scaled: tuple[Any, Queries, dict[str, str]], given: str
) -> None:
    runtime, queries, stored_of = scaled
    stored = stored_of[given]
    _set(runtime, [(stored, stored, "v1"), (stored, given, "v2")])
    assert _rows(queries) == {stored: ("v2", "v1")}


@pytest.mark.parametrize("given", _OFF_SCALE)
def test_a_list_filter_off_the_scale_finds_the_row_it_wrote(
    scaled: tuple[Any, Queries, dict[str, str]], given: str
) -> None:
    runtime, queries, stored_of = scaled
    stored = stored_of[given]
    _set(runtime, [(given, given, "v1")])
    for value in (given, Decimal(given)):
        page = queries.list("scaled_keys", {"id": value}, table="s_price")
        assert [row["id"] for row in page.rows] == [stored]


@pytest.mark.parametrize("given", _OFF_SCALE)
def test_an_event_of_an_aggregate_id_off_the_scale_reaches_every_get_of_its_row(
    scaled: tuple[Any, Queries, dict[str, str]], given: str
) -> None:
    """The service spells the id with more places than the column keeps: its events tag
    ``price:0.125``, the row is ``0.13``; a get by either spelling must read the update."""
    runtime, queries, stored_of = scaled
    stored = stored_of[given]
    _set(runtime, [(given, given, "v1")])
    spellings: list[Any] = [given, Decimal(given), stored, Decimal(stored)]
    assert [_read(queries, key) for key in spellings] == ["v1"] * len(spellings)
    _set(runtime, [(given, given, "v2")])
    assert [_read(queries, key) for key in spellings] == ["v2"] * len(spellings)


@pytest.mark.parametrize("given", ["2.5", "-2.5", "0.5"])
def test_a_numeric_key_of_no_scale_rounds_to_whole_on_postgresql_only(
    scaled: tuple[Any, Queries, dict[str, str]], store_url: str, given: str
) -> None:
    """PostgreSQL's ``NUMERIC(10)`` is ``NUMERIC(10, 0)`` (``2.5`` is the row ``3``); SQLite
    keeps the number as the double bound."""
    runtime, queries, _ = scaled
    sqlite = store_url.startswith("sqlite")
    append(runtime.log, "keys", [("whole", given, "PriceSet", {"value": "v1"})])
    assert runtime.engine.catch_up(["scaled_keys"]) == 1
    (row,) = queries.list("scaled_keys", table="s_whole").rows
    whole = {"2.5": "3", "-2.5": "-3", "0.5": "1"}[given]
    assert Decimal(row["id"]) == (Decimal(given) if sqlite else Decimal(whole))
    spellings: list[Any] = [given, Decimal(given), row["id"]]
    read = [queries.get("scaled_keys", key, table="s_whole").value for key in spellings]
    assert [r and r["value"] for r in read] == ["v1"] * 3
    append(runtime.log, "keys", [("whole", given, "PriceSet", {"value": "v2"})])
    assert runtime.engine.catch_up(["scaled_keys"]) == 1
    read = [queries.get("scaled_keys", key, table="s_whole").value for key in spellings]
    assert [r and r["value"] for r in read] == ["v2"] * 3
