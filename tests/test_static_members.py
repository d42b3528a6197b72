"""A static group member is one tenant's database, as a registry's member is: a row that
claims another tenant cannot reach that tenant's read models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import ConfigError, SourceSettings, load_settings
from outbox.db import create_engine
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox
from tests.tenant_fixtures import model

SALE = '{"day": "2026-11-26", "cents": %d, "n": 1}'


def test_a_member_without_columns_tenant_takes_no_tenant_from_its_rows(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, acme = pg_database(), pg_database()
    init_outbox(SourceSettings(url=acme), "pos")  # an outbox with a tenant_id column
    engine = create_engine(acme)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, tenant_id) VALUES "
            f"('register', 'r1', 'SaleRecorded', '{SALE % 100}', NULL), "
            f"('register', 'r2', 'SaleRecorded', '{SALE % 5000}', 'globex')"
        )
    engine.dispose()
    config = write_config(
        tmp_path / "pos.toml",
        {
            "store": {"url": store},
            "projections": ["tests.tenant_fixtures"],
            "sources": {"pos:acme": {"url": acme, "tenant": "acme"}},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    result = run_cli(["run", "--until-caught-up", "--config", str(config)])
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(store)
    try:
        assert model(engine) == {"acme": (2, 5100)}  # globex's model untouched
    finally:
        engine.dispose()


def test_a_member_naming_a_tenant_column_is_refused_and_its_tenant_is_its_name(
    tmp_path: Path,
) -> None:
    settings = load_settings(None, sources={"pos:acme": {"url": "sqlite:///acme.db"}})
    member = settings.sources["pos:acme"]
    assert (member.tenant, member.columns.tenant) == ("acme", "")
    path = write_config(
        tmp_path / "c.toml",
        {"sources": {"pos:acme": {"url": "sqlite:///a.db", "columns": {"tenant": "tenant_id"}}}},
    )
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert "source 'pos:acme' is a member of group 'pos', a database per tenant" in str(error.value)
