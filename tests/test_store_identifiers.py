"""The load checks of table names (two projections declaring one table, a table named like
another's shadow or old table) compare names as the store resolves them: on PostgreSQL a
name SQLAlchemy quotes (``"Orders"``) keeps its case and no schema is ``public``; on SQLite
names match without case (ASCII letters only) and no schema is ``main``. Before, names were
compared without any case and schemas as written: PostgreSQL's ``"Orders"`` and ``orders``
were refused though two tables, ``orders`` and ``public.orders`` loaded though one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import migrate_store

FIXTURES = "tests.store_identifier_fixtures"


def _status(tmp_path: Path, store: str, projections: list[str]) -> Any:
    migrate_store(store)
    config = write_config(
        tmp_path / "rm.toml",
        {"projections": [f"{FIXTURES}:{p}" for p in projections], "store": {"url": store}},
    )
    return run_cli(["status", "--json", "--config", str(config)])


def _message(result: Any) -> str:
    return " ".join(result.stderr.split())


def test_a_quoted_name_and_its_lower_case_are_two_tables_on_postgresql(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    result = _status(tmp_path, pg_database(), ["Quoted", "Lower"])

    assert result.exit_code == 0, result.output
    assert "quoted_orders" in result.stdout and "lower_orders" in result.stdout


def test_a_name_and_its_lower_case_are_one_table_on_sqlite(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    result = _status(tmp_path, sqlite_database(), ["Quoted", "Lower"])

    assert result.exit_code == 2, result.output
    assert (
        "projections 'quoted_orders' and 'lower_orders' both declare table orders "
        "(spelled Orders by the first) in store 'default'"
    ) in _message(result)


def test_an_unquoted_name_is_folded_on_postgresql(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    result = _status(tmp_path, pg_database(), ["Unquoted", "Lower"])

    assert result.exit_code == 2, result.output
    assert "'unquoted_orders' and 'lower_orders' both declare table orders" in _message(result)


@pytest.mark.parametrize(
    ("engine", "schema_spelled"),
    [("postgresql", "Public"), ("sqlite", "Main")],
    ids=["postgresql-public", "sqlite-main"],
)
def test_no_schema_is_the_default_schema(
    engine: str, schema_spelled: str, database_for: Callable[[str], str], tmp_path: Path
) -> None:
    result = _status(tmp_path, database_for(engine), ["Lower", schema_spelled])

    assert result.exit_code == 2, result.output
    other = f"{schema_spelled.lower()}_orders"
    schema = "public" if engine == "postgresql" else "main"
    assert (
        f"projections 'lower_orders' and '{other}' both declare table {schema}.orders "
        f"(spelled orders by the first)"
    ) in _message(result)


def test_sqlite_folds_only_ascii_letters(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """``Straße`` and ``STRASSE`` are two SQLite tables (Python's casefold made them one)."""
    result = _status(tmp_path, sqlite_database(), ["Street", "Shouted"])

    assert result.exit_code == 0, result.output
    assert "shouted_street" in result.stdout


def test_a_lower_case_shadow_name_is_no_clash_with_a_quoted_table_on_postgresql(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    """``"Orders"``'s shadow is ``"Orders__rebuild"``, not ``orders__rebuild``."""
    result = _status(tmp_path, pg_database(), ["Quoted", "LowerShadow"])

    assert result.exit_code == 0, result.output
    assert "lower_orders_shadow" in result.stdout


def test_a_lower_case_shadow_name_clashes_on_sqlite(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    result = _status(tmp_path, sqlite_database(), ["Quoted", "LowerShadow"])

    assert result.exit_code == 2, result.output
    assert (
        "table orders__rebuild of projection 'lower_orders_shadow' is named like the shadow "
        "table of table Orders"
    ) in _message(result)


def test_an_old_table_in_the_default_schema_clashes_on_postgresql(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    result = _status(tmp_path, pg_database(), ["Lower", "PublicOld"])

    assert result.exit_code == 2, result.output
    assert (
        "table public.orders__old of projection 'public_orders_old' is named like the old "
        "table of table orders"
    ) in _message(result)
