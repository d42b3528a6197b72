"""An enum type or a sequence whose own name is declared ``quote=False`` with capitals
(``sa.Enum(..., name="Movement", quote=False)``, ``sa.Sequence("Tick", quote=False)``) is
made under the name PostgreSQL folds (``movement``, ``tick``). SQLAlchemy's checks
(``has_type``, ``has_sequence``) looked it up as declared, found nothing, and made it
again: a start of a store that made a table taking a type or sequence made already (a table
added to the model) failed "already exists", as did a replay's shadow and a dry run's copy,
which share the live table's type and sequence."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import Settings
from projections.sql_store import SqlStore
from tests.cli_helpers import run_cli
from tests.replay_helpers import Events, Pipeline, deposits, pipeline_config, plan_lines, query
from tests.replay_unquoted_type_fixtures import UnquotedRefunds, UnquotedTypes, ticks

NAMES = ["tests.replay_unquoted_type_fixtures:UnquotedTypes"]
# The types and sequences of the test's schemas, by the names the catalog holds.
_TYPES = """
SELECT n.nspname, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname IN ('public', 'reports') AND t.typtype = 'e'
"""
_SEQUENCES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('public', 'reports') AND c.relkind = 'S' AND c.relname NOT LIKE 'rm\\_%%'
"""
_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('public', 'reports') AND c.relkind = 'r' AND c.relname NOT LIKE 'rm\\_%%'
"""
TYPES = {("public", "movement")}
SEQUENCES = {("public", "tick"), ("reports", "receipt")}


def _pg_engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def test_a_second_start_finds_the_type_and_sequences_postgresql_folded_the_names_of(
    pg_database: Callable[[], str],
) -> None:
    url = pg_database()
    engine = _pg_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA reports")
    try:
        # Two starts of the store: the second with a table added that takes the same type
        # and sequence (and one of the made tables again).
        for projections in ([UnquotedTypes()], [UnquotedTypes(), UnquotedRefunds()]):
            store = SqlStore(url)
            try:
                store.create_tables(projections)
            finally:
                store.close()
        with engine.connect() as conn:
            types = set(conn.exec_driver_sql(_TYPES).all())
            sequences = set(conn.exec_driver_sql(_SEQUENCES).all())
            tables = set(conn.exec_driver_sql(_TABLES).all())
    finally:
        engine.dispose()
    assert types == TYPES
    assert sequences == SEQUENCES
    assert tables == {("public", "ticks"), ("public", "refunds")}


@pytest.fixture
def pipeline(
    make_settings: Callable[..., Settings],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> Iterator[Pipeline]:
    url = pg_database()
    engine = _pg_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA reports")
    engine.dispose()
    p = Pipeline(make_settings, url, sqlite_database, projections=NAMES)
    yield p
    p.close()


def _latest(events: Events) -> dict[str, tuple[int, str]]:
    return {account: (payload["amount"], "deposit") for _, account, _, payload in events}


def _rows(p: Pipeline) -> dict[str, tuple[int, str]]:
    return {account: (row["amount"], row["kind"]) for account, row in p.rows(ticks).items()}


def _numbers(p: Pipeline) -> tuple[list[int], list[int]]:
    rows = p.rows(ticks).values()
    return [row["ticket"] for row in rows], [row["receipt"] for row in rows]


def test_a_replay_shares_the_type_and_sequences_postgresql_folded_the_names_of(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    events = deposits(120, 5, seed=17)
    pipeline.feed("bank", events)
    expected = _latest(events)
    assert _rows(pipeline) == expected
    config = str(pipeline_config(tmp_path, pipeline))

    started = run_cli(["migrate", "--config", config])  # a second start of the store
    assert started.exit_code == 0, started.output

    planned = run_cli(["replay", "unquoted_types", "--dry-run", "--config", config])
    assert planned.exit_code == 0, planned.output
    assert plan_lines(planned.stdout)[-1] == "dry run: nothing was changed"

    pipeline.execute("UPDATE ticks SET amount = -1")  # what the rebuild must replace
    for _ in range(2):  # the first one leaves the names the next one expects
        tickets, receipts = _numbers(pipeline)
        replayed = run_cli(["replay", "unquoted_types", "--yes", "--config", config])
        assert replayed.exit_code == 0, replayed.output
        assert _rows(pipeline) == expected
        # One type, one sequence each: the shadow took the live ones, which go on counting.
        assert set(query(pipeline, _TYPES)) == TYPES
        assert set(query(pipeline, _SEQUENCES)) == SEQUENCES
        new_tickets, new_receipts = _numbers(pipeline)
        assert min(new_tickets) > max(tickets)
        assert min(new_receipts) > max(receipts)
        assert len(set(new_tickets)) == len(new_tickets)
        assert not any(name.endswith(("__rebuild", "__old")) for name in pipeline.tables())
