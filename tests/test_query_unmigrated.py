"""``readmodel query`` against a read store that was never migrated says so, and what to run
(exit 2), as status, parked and work do; it printed the database's "relation does not
exist" (exit 1). It creates nothing there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.cli_helpers import run_cli, write_config

QUERIES = [
    ["query", "totals", "acc-1"],
    ["query", "totals", "--where", "account=acc-1"],
    ["query", "totals", "acc-1", "--wait-for", "bank:1", "--timeout", "0"],
]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("command", QUERIES, ids=["get", "list", "wait-for"])
def test_query_refuses_an_unmigrated_store_naming_migrate(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    kind: str,
    command: list[str],
) -> None:
    url = request.getfixturevalue("pg_database")() if kind == "postgresql" else sqlite_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": url},
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )

    result = run_cli([*command, "--config", str(config)])

    assert result.exit_code == 2, result.output
    assert "is at revision none, this readmodel needs" in result.stderr
    assert f"run `readmodel migrate --config {config}`" in result.stderr
    assert "does not exist" not in result.stderr and "no such table" not in result.stderr
    assert result.stdout == ""
    engine = sa.create_engine(url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
