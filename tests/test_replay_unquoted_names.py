"""A replay of a projection whose tables (and a schema) are declared with mixed-case names
and ``quote=False``: PostgreSQL folds them to lower case (``OrderTotals`` is
``ordertotals``). The shadow copies were made by ``Table.to_metadata(name=...)`` under
names derived as plain text, which drops ``quote=False``: the shadows were
``"OrderTotals__rebuild"`` (their case kept), the swap named the primary keys
``"OrderTotals_pkey"``, and the live tables were looked up by their declared spelling, not
found, so what the database held on them (an index made by hand) was not carried."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from config import Settings
from projections.query_service import Queries
from projections.replay_types import ReplayHooks, ReplayOptions
from tests.replay_helpers import Pipeline, deposits, query
from tests.replay_unquoted_fixtures import UnquotedTotals

NAMES = ["tests.replay_unquoted_fixtures"]


@pytest.fixture
def pipeline(
    make_settings: Callable[..., Settings],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> Iterator[Pipeline]:
    url = pg_database()
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA shopdata")
    engine.dispose()
    p = Pipeline(make_settings, url, sqlite_database, projections=NAMES)
    yield p
    p.close()


def _relations(p: Pipeline) -> set[tuple[str, str, str]]:
    """The tables and indexes of the schemas (readmodel's own ``rm_`` tables left out)."""
    rows = query(
        p,
        "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'shopdata', 'ShopData')"
        " AND c.relname NOT LIKE 'rm\\_%%' AND c.relkind IN ('r', 'i')",
    )
    return {(str(s), str(n), str(k)) for s, n, k in rows}


class Interrupt(ReplayHooks):
    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        raise KeyboardInterrupt


def _store(p: Pipeline) -> Any:
    return p.runtime.engine.store_of(p.runtime.engine.projection("unquoted_totals"))


def _log(p: Pipeline) -> sa.Engine:
    return p.runtime.log.engine


def _expected(events: list) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for _, account, _, payload in events:
        row = out.setdefault(account, {"total": 0, "last": 0})
        row["total"] += payload["amount"]
        row["last"] = payload["amount"]
    return out


def test_a_rebuild_of_unquoted_mixed_case_tables_is_read_by_the_projection(
    pipeline: Pipeline,
) -> None:
    events = deposits(200, 6, seed=41)
    pipeline.feed("bank", events)
    expected = _expected(events)
    # Made by hand on the live tables: carried by the swap only if it finds them.
    pipeline.execute("CREATE INDEX by_hand ON shopdata.lastdeposits (amount)")
    pipeline.execute("COMMENT ON TABLE ordertotals IS 'totals'")
    live = {
        ("public", "ordertotals", "r"),
        ("public", "ordertotals_pkey", "i"),
        ("public", "OrderTotals_total_idx", "i"),  # an index name of its own, quoted
        ("shopdata", "lastdeposits", "r"),
        ("shopdata", "lastdeposits_pkey", "i"),
        ("shopdata", "by_hand", "i"),
    }
    assert _relations(pipeline) == live

    with pytest.raises(KeyboardInterrupt):
        pipeline.replayer("unquoted_totals", Interrupt(), batch=50).run(ReplayOptions())
    shadows = {(s, n, k) for s, n, k in _relations(pipeline) - live if k == "r"}
    assert shadows == {
        ("public", "ordertotals__rebuild", "r"),
        ("shopdata", "lastdeposits__rebuild", "r"),
    }

    pipeline.execute("UPDATE ordertotals SET total = -1")  # what the rebuild must replace
    for _ in range(2):  # twice: the first one leaves the names the next one expects
        summary = pipeline.replayer("unquoted_totals", batch=50).run(ReplayOptions())
        assert summary.left_behind == []
        assert _relations(pipeline) == live
        queries = Queries([UnquotedTotals()], {"default": _store(pipeline)}, _log(pipeline))
        got = {a: queries.run("unquoted_totals", "total", a).value for a in expected}
        assert got == expected
    assert query(pipeline, "SELECT obj_description('ordertotals'::regclass)") == [("totals",)]
