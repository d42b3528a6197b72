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
import sqlalchemy as sa

from projections.store_identifiers import POSTGRESQL, pg_kept, table_key
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import migrate_store
from tests.store_identifier_fixtures import LONG_PREFIX

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


def test_the_shadow_of_an_unquoted_name_is_folded_on_postgresql(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    """``Orders`` declared ``quote=False`` is ``orders``: its replay's shadow is
    ``orders__rebuild``, another projection's table (before, its shadow was taken for
    ``"Orders__rebuild"`` and the clash loaded)."""
    result = _status(tmp_path, pg_database(), ["Unquoted", "LowerShadow"])

    assert result.exit_code == 2, result.output
    assert (
        "table orders__rebuild of projection 'lower_orders_shadow' is named like the shadow "
        "table of table Orders that a replay of projection 'unquoted_orders' makes"
    ) in _message(result)


SHOUTED = "Shouted_" + "X" * 60


def test_what_postgresql_keeps_of_a_long_name_is_modelled(pg_database: Callable[[], str]) -> None:
    """:func:`pg_kept` against the server: the first 63 bytes, cut before a character
    that would not fit whole (a 2-, 3- or 4-byte one), quoted or folded alike."""
    names = [
        "a" * 62 + "éé",
        "a" * 61 + "€x",
        "b" * 60 + "😀",
        "é" * 40,
        "c" * 63 + "d",
        "Upper_" + "Ä" * 40,
        LONG_PREFIX + "_a",
    ]
    engine = sa.create_engine(pg_database().replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            kept = []
            for name in names:
                conn.exec_driver_sql(f'CREATE TABLE "{name}" (a int)')
                kept.append(
                    conn.exec_driver_sql(
                        "SELECT relname FROM pg_class WHERE oid = "
                        "(SELECT max(oid) FROM pg_class WHERE relkind = 'r')"
                    ).scalar_one()
                )
            conn.exec_driver_sql(f"CREATE TABLE {SHOUTED} (a int)")  # folded, then cut
            folded = conn.exec_driver_sql(
                "SELECT relname FROM pg_class WHERE relname LIKE 'shouted%%'"
            ).scalar_one()
    finally:
        engine.dispose()

    assert kept == [pg_kept(name) for name in names]
    assert [len(name.encode()) for name in kept] == [62, 61, 60, 62, 63, 62, 62]
    assert folded == table_key(sa.sql.quoted_name(SHOUTED, False), None, POSTGRESQL)[1]


def test_two_names_alike_in_their_first_63_bytes_are_one_table_on_postgresql(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    result = _status(tmp_path, pg_database(), ["LongA", "LongB"])

    assert result.exit_code == 2, result.output
    assert (
        f"projections 'long_a' and 'long_b' both declare table {LONG_PREFIX}_b (spelled "
        f"{LONG_PREFIX}_a by the first) (PostgreSQL keeps the first 63 bytes of a name, in "
        "which the two are alike) in store 'default'"
    ) in _message(result)


@pytest.mark.parametrize(
    ("projection", "table", "what", "size"),
    [
        ("LongA", f"{LONG_PREFIX}_a", "name", 68),
        ("LongSchema", f"{LONG_PREFIX}.orders", "schema", 66),
    ],
    ids=["name", "schema"],
)
def test_a_name_over_63_bytes_is_refused_on_postgresql(
    pg_database: Callable[[], str],
    tmp_path: Path,
    projection: str,
    table: str,
    what: str,
    size: int,
) -> None:
    """Else created under the cut name at the first start, and created again (``already
    exists``) at the next: SQLAlchemy looks it up by the whole name."""
    result = _status(tmp_path, pg_database(), [projection])

    assert result.exit_code == 2, result.output
    assert (
        f"table {table} of projection '{projection.lower().replace('long', 'long_')}' in "
        f"store 'default': its {what} is {size} bytes long (UTF-8) and PostgreSQL keeps the "
        f"first 63 of a name: it would be '{'summe_' + 'é' * 28}'"
    ) in _message(result)


def test_long_names_are_no_clash_on_sqlite(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    result = _status(tmp_path, sqlite_database(), ["LongA", "LongB"])

    assert result.exit_code == 0, result.output
    assert "long_a" in result.stdout and "long_b" in result.stdout
