"""A tenant read filters on the tenant column as well, so an index led by it serves a list
by its next column: ``readmodel query sales_by_day --where day=... --tenant acme`` over a
``(tenant, day)`` key was refused as unindexed, though the read uses that key."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from projections.query_reader import QueryError
from projections.query_service import Queries
from tests.cli_helpers import run_cli, write_config
from tests.projection_fixtures import append_tenant_events, engine_on
from tests.tenant_fixtures import SalesByDay


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_tenant_list_by_the_column_after_the_tenant_in_a_key_is_indexed(
    kind: str, database_for: Callable[[str], str], tmp_path: Path
) -> None:
    url = database_for(kind)
    with engine_on(url, [SalesByDay()]) as (log, store, engine):
        for tenant, cents in (("acme", 100), ("globex", 700)):
            sale = {"day": "2026-11-26", "cents": cents, "n": 1}
            append_tenant_events(
                log, [(tenant, "r1", "SaleRecorded", sale)], f"pos:{tenant}", "register"
            )
        engine.catch_up(deadline=30)
        queries = Queries.from_engine(engine, log.engine)
        page = queries.list("sales_by_day", {"day": "2026-11-26"}, tenant="acme")
        assert [(r["tenant"], r["cents"]) for r in page.rows] == [("acme", 100)]
        with pytest.raises(QueryError, match="column 'last_n' is not indexed"):
            queries.list("sales_by_day", {"last_n": 1}, table="pos_registers", tenant="acme")

    config = write_config(
        tmp_path / "rm.toml", {"store": {"url": url}, "projections": ["tests.tenant_fixtures"]}
    )
    where = ["query", "sales_by_day", "--where", "day=2026-11-26", "--config", str(config)]
    result = run_cli([*where, "--tenant", "globex", "--json"])
    assert result.exit_code == 0, result.output
    assert [(r["tenant"], r["cents"]) for r in json.loads(result.stdout)["rows"]] == [
        ("globex", 700)
    ]
    result = run_cli(where)  # still for one tenant only
    assert result.exit_code == 2 and "keeps rows per tenant" in result.output, result.output
