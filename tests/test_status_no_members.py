"""A projection whose sources have no member yet (a tenant registry listing no tenant) is
still a row of the ``status`` table: it was left out, so the table showed no projection at
all, as if none were configured, while ``--json`` listed it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.cli_helpers import run_cli, table_rows
from tests.tenant_fixtures import make_registry
from tests.tenant_helpers import config_for


def test_a_projection_of_a_registry_without_tenants_is_listed(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    registry = sqlite_database()
    make_registry(registry, {})
    config = config_for(tmp_path, sqlite_database(), registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    table = run_cli(["status", "--config", str(config)])

    assert table.exit_code == 0, table.output
    projections = table.stdout[table.stdout.index("projections") :]
    assert [list(row.values()) for row in table_rows(projections)] == [
        ["sales_by_day", "-", "-", "-", "0", "-", "0", ""]  # no source, checkpoint, head, age
    ]
    document = json.loads(run_cli(["status", "--json", "--config", str(config)]).stdout)
    assert [(p["projection"], p["lanes"]) for p in document["projections"]] == [
        ("sales_by_day", [])
    ]
    assert document["sources"] == []
    health = run_cli(["health", "--config", str(config)])
    assert health.exit_code == 0, health.output
    assert "0 sources, 1 projection within bounds" in health.stdout
