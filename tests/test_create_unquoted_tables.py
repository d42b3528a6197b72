"""A store's start-up makes the projections' missing tables (``create(checkfirst=True)``).
A table declared ``quote=False`` with capitals, or in a schema declared
``quote_schema=False`` with capitals, is made under the names PostgreSQL folds
(``ordertotals``, ``reports.daily``); the check looked it up as declared (``OrderTotals``,
``Reports``), found nothing, and the second start failed "already exists"."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from projections.sql_store import SqlStore
from tests.replay_unquoted_fixtures import UnquotedTotals
from tests.replay_unquoted_index_fixtures import UnquotedIndexes

_RELATIONS = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('public', 'shopdata', 'reports') AND c.relkind = 'r'
   AND c.relname NOT LIKE 'rm\\_%%'
"""


def test_a_second_start_finds_the_tables_postgresql_folded_the_names_of(
    pg_database: Callable[[], str],
) -> None:
    url = pg_database()
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA shopdata; CREATE SCHEMA reports")
    projections = [UnquotedTotals(), UnquotedIndexes()]
    try:
        for _ in range(2):  # two starts of the store
            store = SqlStore(url)
            try:
                store.create_tables(projections)
            finally:
                store.close()
        with engine.connect() as conn:
            tables = set(conn.exec_driver_sql(_RELATIONS).all())
            types = conn.exec_driver_sql(
                "SELECT typnamespace::regnamespace::text FROM pg_type WHERE typname = 'movement'"
            ).all()
    finally:
        engine.dispose()
    assert tables == {
        ("public", "ordertotals"),
        ("shopdata", "lastdeposits"),
        ("public", "balances"),
        ("reports", "daily"),
    }
    assert types == [("reports",)]
