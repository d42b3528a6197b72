"""Which MySQL / MariaDB outbox a source reads (``config.outbox_identity``): the database
the table is in, the configured ``schema`` (a MySQL schema is a database) over the DSN's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from config import load_settings
from outbox.sources import open_source
from outbox.tenant_registry import TenantRegistry
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    pending_rows,
    record_sales,
    sales_for,
)
from tests.tenant_helpers import config_for


def test_a_schema_names_the_database_the_outbox_is_in(
    pg_database: Callable[[], str], mysql_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry = pg_database(), pg_database()
    tenant, other = mysql_database(), mysql_database()
    init_tenant_outbox(tenant)
    # A static source connected to another database, reading the tenant's table by schema.
    by_schema = {"url": other, "schema": str(sa.make_url(tenant).database), "tenant": "acme"}
    make_registry(registry, {"acme": tenant})
    settings = load_settings(config_for(tmp_path, store, registry, sources={"auth": by_schema}))
    reader = TenantRegistry("pos", settings.tenants["pos"], settings.sources)
    try:
        members = reader.read()
    finally:
        reader.close()
    record_sales(tenant, sales_for(1, 2))
    auth = open_source("auth", settings.sources["auth"])
    try:  # what the static source reads is the tenant's outbox
        assert auth.pending().undelivered == pending_rows(tenant) == 2
    finally:
        auth.close()
    assert sorted(members.sources) == []
    problems = " ".join(str(p) for p in members.problems)
    assert "tenant 'acme': the same database and outbox table as source 'auth'" in problems
