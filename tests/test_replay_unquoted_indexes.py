"""A replay (PostgreSQL) of a projection whose index and constraint names are declared with
mixed case and ``quote=False`` (``ByTotal`` is ``bytotal`` in the catalog), and whose second
table is in a schema declared so (``Reports`` is ``reports``).

The shadow's copies of those indexes and constraints were named from the declared spelling
(``"ByTotal__rebuild"``, quoted), the swap renamed them to ``"ByTotal"`` (case kept), and the
live ``bytotal`` was not found among the declared ones: taken as made by hand, it was built
again on the shadow, so the rebuilt table had the index twice (``bytotal`` and ``ByTotal``),
and ``--dry-run`` listed it as made by hand. A table in the ``Reports`` schema was not found
at the next start (``create(checkfirst=True)`` looked in ``Reports``), which failed
"already exists", as did a dry run (it asked for the privileges on schema ``Reports``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import Settings
from projections.query_service import Queries
from projections.replay_types import ReplayHooks, ReplayOptions
from projections.shadow import ShadowTables
from tests.cli_helpers import run_cli
from tests.replay_helpers import Pipeline, deposits, pipeline_config, plan_lines, query
from tests.replay_unquoted_index_fixtures import UnquotedIndexes, balances
from workers.runtime import build_runtime

NAMES = ["tests.replay_unquoted_index_fixtures"]
LIVE = {
    ("public", "balances", "r"),
    ("public", "balances_pkey", "i"),
    ("public", "bytotal", "i"),
    ("public", "onetotal", "i"),
    ("public", "by_hand", "i"),  # made by the tests
    ("reports", "daily", "r"),
    ("reports", "daily_pkey", "i"),
    ("reports", "dailybyamount", "i"),
}
CONSTRAINTS = {
    ("balances", "balances_pkey"),
    ("balances", "onetotal"),
    ("balances", "somedeposits"),
    ("reports.daily", "daily_pkey"),
}


@pytest.fixture
def pipeline(
    make_settings: Callable[..., Settings],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> Iterator[Pipeline]:
    url = pg_database()
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA reports")
    engine.dispose()
    p = Pipeline(make_settings, url, sqlite_database, projections=NAMES)
    p.feed("bank", deposits(120, 5, seed=7))
    p.execute("CREATE INDEX by_hand ON balances (deposits)")
    yield p
    p.close()


def _relations(p: Pipeline) -> set[tuple[str, str, str]]:
    """The tables and indexes of the schemas (readmodel's own ``rm_`` tables left out)."""
    rows = query(
        p,
        "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'reports')"
        " AND c.relname NOT LIKE 'rm\\_%%' AND c.relkind IN ('r', 'i')",
    )
    return {(str(s), str(n), str(k)) for s, n, k in rows}


def _constraints(p: Pipeline) -> set[tuple[str, str]]:
    rows = query(
        p,
        "SELECT conrelid::regclass::text, conname FROM pg_constraint"
        " WHERE connamespace::regnamespace::text IN ('public', 'reports')"
        " AND conrelid::regclass::text NOT LIKE 'rm\\_%%'",
    )
    return {(str(t), str(n)) for t, n in rows}


def _balances(p: Pipeline) -> dict[str, object]:
    store = p.runtime.engine.store_of(p.runtime.engine.projection("unquoted_indexes"))
    queries = Queries([UnquotedIndexes()], {"default": store}, p.runtime.log.engine)
    accounts = [f"acct-{n}" for n in range(5)]
    return {a: queries.run("unquoted_indexes", "balance", a).value for a in accounts}


class Interrupt(ReplayHooks):
    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        raise KeyboardInterrupt


def test_declared_unquoted_index_names_are_not_taken_for_hand_made_ones(
    pipeline: Pipeline,
) -> None:
    assert _relations(pipeline) == LIVE
    assert _constraints(pipeline) == CONSTRAINTS
    with pipeline.runtime.log.engine.connect() as conn, conn.begin():
        assert ShadowTables([balances]).carried(conn) == ["index by_hand on balances"]

    with pytest.raises(KeyboardInterrupt):
        pipeline.replayer("unquoted_indexes", Interrupt(), batch=40).run(ReplayOptions())
    shadows = {(s, n) for s, n, _ in _relations(pipeline) - LIVE}
    assert shadows == {
        ("public", "balances__rebuild"),
        ("public", "balances__rebuild_pkey"),
        ("public", "bytotal__rebuild"),  # was "ByTotal__rebuild"
        ("public", "onetotal__rebuild"),
        ("reports", "daily__rebuild"),
        ("reports", "daily__rebuild_pkey"),
        ("reports", "dailybyamount__rebuild"),
    }

    expected = _balances(pipeline)
    pipeline.execute("UPDATE balances SET total = -1")  # what the rebuild must replace
    for _ in range(2):  # the first one leaves the names the next one expects
        summary = pipeline.replayer("unquoted_indexes", batch=40).run(ReplayOptions())
        assert summary.left_behind == []
        assert _relations(pipeline) == LIVE  # each index once, by its catalog name
        assert _constraints(pipeline) == CONSTRAINTS
        assert _balances(pipeline) == expected


def test_a_table_in_an_unquoted_mixed_case_schema_starts_again_and_is_replayed(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    build_runtime(pipeline.settings).close()  # a second start finds the tables made
    expected = _balances(pipeline)
    config = str(pipeline_config(tmp_path, pipeline))

    planned = run_cli(["replay", "unquoted_indexes", "--dry-run", "--config", config])
    assert planned.exit_code == 0, planned.output
    lines = plan_lines(planned.stdout)
    assert lines[-4:] == [
        "table balances <- balances__rebuild",
        "table Daily <- daily__rebuild",
        "the swap carries: index by_hand on balances",
        "dry run: nothing was changed",
    ]

    pipeline.execute("UPDATE reports.daily SET amount = -1")  # what the rebuild must replace
    for _ in range(2):  # each command starts the store again, then swaps
        replayed = run_cli(["replay", "unquoted_indexes", "--yes", "--config", config])
        assert replayed.exit_code == 0, replayed.output
        assert _relations(pipeline) == LIVE  # no daily__rebuild, no daily__old left
        assert _balances(pipeline) == expected
