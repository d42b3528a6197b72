"""A bad tenant registry row (no tenant id, no DSN, a DSN refused) is labelled as the
configuration problem it is: ``refused:`` in ``health`` (``conflict:`` stays for a shared
database), not ``unreachable:``, and in ``status``'s error line, its table (``(refused)``)
and ``--json`` (``"refused": true``); and ``status`` names a registry and its members by where
they are only (scheme, host, port, database), without the registry's user or query."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.cli_helpers import run_cli
from tests.tenant_fixtures import init_tenant_outbox, make_registry
from tests.tenant_helpers import config_for

QUERY = "application_name=rm_status_q"

BAD_ROWS = pytest.mark.parametrize(
    ("tenant", "dsn", "source", "says"),
    [
        ("bad", "not a dsn", "pos:bad", "tenant 'bad': DSN refused"),
        (None, "postgresql://pos@127.0.0.1/pos", "pos", "row 2: no tenant id"),
        ("bad", None, "pos:bad", "tenant 'bad': no DSN"),
    ],
    ids=["DSN refused", "no tenant id", "no DSN"],
)


def _migrated_config(
    pg_database: Callable[[], str], tmp_path: Path, tenant: str | None, dsn: str | None
) -> str:
    """A migrated store and a registry listing a good tenant and the bad row."""
    store, registry, zeta = (pg_database() for _ in range(3))
    init_tenant_outbox(zeta)
    make_registry(registry, {"zeta": zeta, tenant: dsn})
    config = str(config_for(tmp_path, store, registry))
    assert run_cli(["migrate", "--config", config]).exit_code == 0
    return config


@BAD_ROWS
def test_health_labels_a_bad_row_refused_not_unreachable(
    pg_database: Callable[[], str],
    tmp_path: Path,
    tenant: str | None,
    dsn: str | None,
    source: str,
    says: str,
) -> None:
    config = _migrated_config(pg_database, tmp_path, tenant, dsn)

    # --timeout 30: the default 1.5 s is taken for unreachable on a loaded machine.
    health = run_cli(["health", "--timeout", "30", "--config", config])
    assert health.exit_code == 1, health.output  # unhealthy, as documented
    (line,) = [x for x in health.output.splitlines() if says in x]
    assert f"source {source}: refused: " in line, health.output
    assert "unreachable" not in health.output
    assert "conflict:" not in health.output


@BAD_ROWS
def test_status_labels_a_bad_row_refused_as_health_does(
    pg_database: Callable[[], str],
    tmp_path: Path,
    tenant: str | None,
    dsn: str | None,
    source: str,
    says: str,
) -> None:
    config = _migrated_config(pg_database, tmp_path, tenant, dsn)

    status = run_cli(["status", "--timeout", "30", "--config", config])
    assert status.exit_code == 2, status.output
    line = f"{source}: refused: tenant registry 'pos', {says}"
    assert line in " ".join(status.stderr.split()), status.stderr
    sources_table = status.stdout.split("projections")[0]
    marked = r"[^\n]*(\n[^\n]*)?\(refused\)"  # the table wraps at 80 columns
    assert re.search(re.escape(f"│ {source} ") + marked, sources_table), sources_table
    assert sources_table.count("(refused)") == 1 and "(conflict)" not in sources_table

    report = run_cli(["status", "--json", "--timeout", "30", "--config", config])
    assert report.exit_code == 2
    sources = {s["source"]: s for s in json.loads(report.stdout)["sources"]}
    assert sources[source]["refused"] is True, sources[source]
    assert sources[source]["database_conflict"] is False
    assert sources["pos:zeta"]["refused"] is False and sources["pos:zeta"]["error"] is None


def _location(url: str) -> str:
    where = sa.make_url(url)
    return f"postgresql://{where.host}:{where.port}/{where.database}"


def test_status_names_a_registry_and_its_members_by_location_only(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, zeta = (pg_database() for _ in range(3))
    init_tenant_outbox(zeta)
    make_registry(registry, {"zeta": f"{zeta}?{QUERY}", "bad": None})
    config = str(config_for(tmp_path, store, f"{registry}?{QUERY}"))
    assert run_cli(["migrate", "--config", config]).exit_code == 0

    report = run_cli(["status", "--json", "--timeout", "30", "--config", config])
    assert report.exit_code == 2, report.output
    urls = {s["source"]: s["url"] for s in json.loads(report.stdout)["sources"]}
    assert urls["pos:bad"] == _location(registry), urls  # a bad row: the registry's location
    assert urls["pos:zeta"] == _location(zeta), urls  # a member: its own location
    assert "rm_status_q" not in report.stdout and "@" not in report.stdout

    registry_engine = sa.create_engine(registry)
    try:
        with registry_engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE tenants RENAME TO tenants_gone")
    finally:
        registry_engine.dispose()
    unread = run_cli(["status", "--json", "--timeout", "30", "--config", config])
    urls = {s["source"]: s["url"] for s in json.loads(unread.stdout)["sources"]}
    assert urls["pos"] == _location(registry), unread.output  # an unread registry
    table = run_cli(["status", "--timeout", "30", "--config", config])
    assert "rm_status_q" not in table.output and "@" not in table.output
