"""A bad tenant registry row (no tenant id, no DSN, a DSN refused) is a configuration
problem, as a conflict is: ``relay --once``, ``run --until-caught-up`` and ``status`` exit
2 for it after the other tenants are relayed, and 3 when something cannot be reached as
well (3 wins)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    record_sales,
    registry_sql,
    sales_for,
)
from tests.tenant_helpers import config_for

COMMANDS = (["relay", "--once"], ["run", "--until-caught-up"], ["status", "--timeout", "30"])


@pytest.mark.parametrize(
    ("tenant", "dsn", "says"),
    [
        ("bad", "not a dsn", "tenant 'bad': DSN refused"),
        (None, "postgresql://pos@127.0.0.1/pos", "row 2: no tenant id"),
        ("bad", None, "tenant 'bad': no DSN"),
    ],
    ids=["DSN refused", "no tenant id", "no DSN"],
)
def test_a_bad_row_exits_2_and_3_when_something_is_unreachable_too(
    pg_database: Callable[[], str], tmp_path: Path, tenant: str | None, dsn: str | None, says: str
) -> None:
    store, registry, zeta = (pg_database() for _ in range(3))
    init_tenant_outbox(zeta)
    make_registry(registry, {"zeta": zeta, tenant: dsn})
    config = str(config_for(tmp_path, store, registry))
    assert run_cli(["migrate", "--config", config]).exit_code == 0
    record_sales(zeta, sales_for(1, 2))
    for command in COMMANDS:
        result = run_cli([*command, "--config", config])
        assert says in result.output, (command, result.output)
        assert result.exit_code == 2, (command, result.output)  # the configuration's to fix
    relayed = run_cli(["status", "--json", "--config", config])
    assert '"pos:zeta"' in relayed.stdout and '"undelivered": 0' in relayed.stdout

    # A tenant database that cannot be reached as well: 3 wins.
    registry_sql(
        registry,
        "INSERT INTO tenants VALUES ('deadco', 'postgresql://pos@127.0.0.1:1/pos', true)",
    )
    for command in COMMANDS:
        result = run_cli([*command, "--config", config])
        assert result.exit_code == 3, (command, result.output)
