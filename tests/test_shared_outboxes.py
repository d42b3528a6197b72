"""Two sources reading one outbox would mix their rows (whichever leads takes them as its
own tenant's): registry rows doing so are bad rows, static sources a config error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from config import ConfigError, load_settings
from outbox.tenant_registry import TenantRegistry
from tests.cli_helpers import run_cli, with_password, write_config
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    pending_rows,
    record_sales,
    sales_for,
    tenant_source,
)
from tests.tenant_helpers import config_for


def _spelled_otherwise(url: str) -> str:
    """The same database, written another way: localhost, the default port, a password."""
    other = with_password(url, "globex-s3cret")
    return other.replace("127.0.0.1:5432", "LOCALHOST")


def test_registry_rows_naming_one_database_are_both_refused(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, shared, zeta = (pg_database() for _ in range(4))
    for url in (shared, zeta):
        init_tenant_outbox(url)
    make_registry(registry, {"acme": shared, "globex": _spelled_otherwise(shared), "zeta": zeta})
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    record_sales(shared, sales_for(1, 3))
    record_sales(zeta, sales_for(1, 2))

    relayed = run_cli(["relay", "--once", "--config", str(config)])
    assert relayed.exit_code == 2  # a conflict in the configuration, as status says
    assert "pos:zeta: relayed 2" in relayed.stdout
    same = "the same database and outbox table as"
    assert f"tenant 'acme': {same} tenant 'globex': not relayed" in relayed.output
    assert f"tenant 'globex': {same} tenant 'acme': not relayed" in relayed.output
    assert pending_rows(shared) == 3  # neither tenant took the other's rows
    assert "globex-s3cret" not in relayed.output

    status = run_cli(["status", "--config", str(config)])
    assert "pos:acme" in status.output and "as tenant 'globex'" in status.output


def test_a_member_reading_a_static_sources_outbox_is_refused(tmp_path: Path) -> None:
    registry_url = f"sqlite:///{tmp_path / 'registry.db'}"
    orders = f"sqlite:///{tmp_path / 'orders.db'}"
    make_registry(registry_url, {"acme": orders, "zeta": f"sqlite:///{tmp_path / 'z.db'}"})
    settings = load_settings(
        None,
        sources={"orders": {"url": orders}},
        tenants={"pos": {"url": registry_url, "query": "SELECT tenant_id, dsn FROM tenants"}},
    )
    registry = TenantRegistry("pos", settings.tenants["pos"], settings.sources)
    members = registry.read()
    registry.close()
    assert list(members.sources) == ["pos:zeta"]
    assert [str(p) for p in members.problems] == [
        "tenant registry 'pos', tenant 'acme': the same database and outbox table as source "
        "'orders': not relayed (each tenant needs a database of its own)"
    ]


def test_static_sources_naming_one_outbox_are_a_config_error(tmp_path: Path) -> None:
    shared = "postgresql://pos@127.0.0.1:5432/rm_f2_pos_acme"
    path = write_config(
        tmp_path / "c.toml",
        {
            "sources": {
                "pos:acme": tenant_source(shared, "acme"),
                "pos:globex": tenant_source(_spelled_otherwise(shared), "globex"),
                "pos:other_table": {**tenant_source(shared, "o"), "table": "outbox2"},
            }
        },
    )
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    message = str(error.value)
    assert "sources 'pos:acme' and 'pos:globex' read the same database and outbox table" in (
        message
    )
    assert "globex-s3cret" not in message and "other_table" not in message


def test_a_registry_tenant_id_with_a_trailing_newline_is_a_bad_row(tmp_path: Path) -> None:
    registry_url = f"sqlite:///{tmp_path / 'registry.db'}"
    make_registry(registry_url, {"acme\n": f"sqlite:///{tmp_path / 'a.db'}"})
    settings = load_settings(
        None,
        tenants={"pos": {"url": registry_url, "query": "SELECT tenant_id, dsn FROM tenants"}},
    )
    registry = TenantRegistry("pos", settings.tenants["pos"])
    members = registry.read()
    registry.close()
    assert members.sources == {}
    assert "is no tenant id" in str(members.problems[0])
