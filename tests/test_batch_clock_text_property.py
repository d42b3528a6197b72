"""Property: what an upsert keeps of a ``time`` or ``timedelta`` written to a text column is
the text PostgreSQL stores when psycopg sends the value itself into such a column (stored and
read back, not ``%s::text``): any time, with or without a fixed offset (seconds and
microseconds in it, ``fold``), any ``timedelta`` from ``timedelta.min`` to ``timedelta.max``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import time, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from outbox.db import create_engine
from projections.sql_tx import SqlTx

_LIMIT = timedelta(hours=16)  # PostgreSQL takes offsets below 16 hours
_OFFSETS = st.timedeltas(-_LIMIT + timedelta(microseconds=1), _LIMIT - timedelta(microseconds=1))
_TIMES = st.builds(
    lambda clock, offset, fold: clock.replace(tzinfo=offset, fold=fold),
    st.times(),
    st.none() | _OFFSETS.map(timezone),
    st.integers(0, 1),
)
_NEAR = st.timedeltas(-timedelta(days=3), timedelta(days=3))  # a day, days, signs mixed
_CLOCKS = st.lists(_TIMES | st.timedeltas() | _NEAR, min_size=1, max_size=40)

_METADATA = sa.MetaData()
_TABLE = sa.Table(
    "clock_property",
    _METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("t", sa.Text),
)


def _kept(engine: sa.Engine, values: list[Any]) -> list[Any]:
    """What a batch reads back of each value after its upsert (nothing flushed)."""
    with engine.connect() as conn:
        tx = SqlTx(conn, {_TABLE: _TABLE})
        for n, value in enumerate(values):
            tx.upsert(_TABLE, {"id": n, "t": value})
        return [tx.get(_TABLE, n)["t"] for n in range(len(values))]  # type: ignore[index]


def _stored(engine: sa.Engine, values: list[Any]) -> list[Any]:
    """The text PostgreSQL stores of each value psycopg sends as its own type."""
    with engine.connect() as conn, conn.begin() as transaction:
        conn.execute(_TABLE.insert(), [{"id": n, "t": v} for n, v in enumerate(values)])
        found = {n: t for n, t in conn.execute(sa.select(_TABLE.c.id, _TABLE.c.t))}
        transaction.rollback()
    return [found[n] for n in range(len(values))]


def test_a_clock_value_is_kept_as_the_text_postgresql_stores(
    pg_database: Callable[[], str],
) -> None:
    engine = create_engine(pg_database())
    _METADATA.create_all(engine)

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(values=_CLOCKS)
    @example(values=[timedelta.max, timedelta.min, timedelta(0), timedelta(microseconds=-1)])
    @example(values=[time(0), time(23, 59, 59, 999999, timezone(_LIMIT - timedelta(seconds=1)))])
    def check(values: list[Any]) -> None:
        assert _kept(engine, values) == _stored(engine, values)

    try:
        check()
    finally:
        engine.dispose()
