"""``readmodel outbox init`` treats a bad tenant registry row (no DSN, a DSN refused) as the
relay and ``status`` do: refused by the configuration, exit 2 for the registry (3 still wins
for a tenant database that cannot be reached), and the row named is refused, not missing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli
from tests.tenant_fixtures import make_registry
from tests.tenant_helpers import config_for

READY = "outbox table 'outbox' is ready"


@pytest.mark.parametrize(
    ("dsn", "says"),
    [(None, "tenant 'bad': no DSN"), ("not a dsn", "tenant 'bad': DSN refused")],
    ids=["no DSN", "DSN refused"],
)
def test_init_exits_2_for_a_bad_row_as_the_relay_and_status_do(
    pg_database: Callable[[], str], tmp_path: Path, dsn: str | None, says: str
) -> None:
    store, registry, zeta = (pg_database() for _ in range(3))
    make_registry(registry, {"zeta": zeta, "bad": dsn})
    config = str(config_for(tmp_path, store, registry))
    assert run_cli(["migrate", "--config", config]).exit_code == 0

    made = run_cli(["outbox", "init", "--source", "pos", "--config", config])
    assert f"pos:zeta: {READY}" in made.stdout and says in made.output
    assert made.exit_code == 2, made.output

    one = run_cli(["outbox", "init", "--source", "pos:bad", "--config", config])
    assert says in one.output and "lists no" not in one.output
    assert one.exit_code == 2, one.output

    relayed = run_cli(["relay", "--once", "--config", config])
    assert relayed.exit_code == 2, relayed.output  # the relay: the same row, the same code
    status = run_cli(["status", "--timeout", "30", "--config", config])
    assert status.exit_code == 2, status.output


def test_init_exits_3_when_a_tenant_database_is_down_beside_a_bad_row(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, zeta = (pg_database() for _ in range(3))
    make_registry(registry, {"zeta": zeta, "bad": None, "down": "postgresql://127.0.0.1:1/x"})
    config = str(config_for(tmp_path, store, registry))
    assert run_cli(["migrate", "--config", config]).exit_code == 0
    made = run_cli(["outbox", "init", "--source", "pos", "--config", config])
    assert f"pos:zeta: {READY}" in made.stdout and "tenant 'bad': no DSN" in made.output
    assert made.exit_code == 3, made.output
