"""A bad tenant registry row (no tenant id, no DSN, a DSN refused) is labelled as the
configuration problem it is: ``refused:`` in ``health`` (``conflict:`` stays for a shared
database), not ``unreachable:``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli
from tests.tenant_fixtures import init_tenant_outbox, make_registry
from tests.tenant_helpers import config_for


@pytest.mark.parametrize(
    ("tenant", "dsn", "source", "says"),
    [
        ("bad", "not a dsn", "pos:bad", "tenant 'bad': DSN refused"),
        (None, "postgresql://pos@127.0.0.1/pos", "pos", "row 2: no tenant id"),
        ("bad", None, "pos:bad", "tenant 'bad': no DSN"),
    ],
    ids=["DSN refused", "no tenant id", "no DSN"],
)
def test_health_labels_a_bad_row_refused_not_unreachable(
    pg_database: Callable[[], str],
    tmp_path: Path,
    tenant: str | None,
    dsn: str | None,
    source: str,
    says: str,
) -> None:
    store, registry, zeta = (pg_database() for _ in range(3))
    init_tenant_outbox(zeta)
    make_registry(registry, {"zeta": zeta, tenant: dsn})
    config = str(config_for(tmp_path, store, registry))
    assert run_cli(["migrate", "--config", config]).exit_code == 0

    # --timeout 30: the default 1.5 s is taken for unreachable on a loaded machine.
    health = run_cli(["health", "--timeout", "30", "--config", config])
    assert health.exit_code == 1, health.output  # unhealthy, as documented
    (line,) = [x for x in health.output.splitlines() if says in x]
    assert f"source {source}: refused: " in line, health.output
    assert "unreachable" not in health.output
    assert "conflict:" not in health.output
