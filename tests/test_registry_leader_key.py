"""The PostgreSQL relay's leader lock of an outbox table found by the search path (a DSN's
``?options=-csearch_path=``): every relay of one table takes one key, whenever it asks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from config import SourceSettings
from outbox.db import create_engine
from outbox.errors import SourceError
from outbox.sources import open_source
from tests.tenant_fixtures import init_tenant_outbox, registry_sql, tenant_source


def _in_schema(url: str, schema: str) -> str:
    options = quote(f"-csearch_path={schema}", safe="")
    return f"{url}?options={options}"


def _tries(source: object) -> bool:
    """Whether ``source`` leads now (a missing table: it does not)."""
    try:
        return bool(source.try_lead())  # type: ignore[attr-defined]
    except SourceError:
        return False


def test_a_table_dropped_while_leading_gives_no_second_key(
    pg_database: Callable[[], str],
) -> None:
    database = pg_database()
    registry_sql(database, "CREATE SCHEMA tenant_a")
    in_a = _in_schema(database, "tenant_a")
    init_tenant_outbox(in_a)
    settings = SourceSettings(**tenant_source(in_a, "acme"))  # type: ignore[arg-type]
    first, second = open_source("pos:acme", settings), open_source("pos:acme", settings)
    try:
        assert first.try_lead()
        first.lose_leadership()  # type: ignore[attr-defined]  (a claim failed)
        registry_sql(database, "DROP TABLE tenant_a.outbox")
        first_leads = _tries(first)  # the table is not there: no key to lead it by
        init_tenant_outbox(in_a)  # made again, in tenant_a: the one table both relays read
        second_leads = _tries(second)
        assert [first_leads, second_leads].count(True) <= 1
        if not first_leads:  # once the table is back, one lock for both again
            assert second_leads and not _tries(first)
    finally:
        first.close()
        second.close()


def _earlier_key(schema: str) -> int:
    """The leader key of releases before the search path was read: the configured schema,
    or ``public``."""
    digest = hashlib.blake2b(f"readmodel-relay:{schema}.outbox".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


@pytest.mark.parametrize("schema", [None, "tenant_a"])
def test_an_earlier_release_and_this_one_exclude_each_other(
    pg_database: Callable[[], str], schema: str | None
) -> None:
    """During a rolling upgrade an earlier release's relay (one exclusive lock on
    :func:`_earlier_key` of ``public``, wherever the search path finds the table) and this
    release's relay of the same table never lead both: in ``public``, and in a schema the
    DSN's search path names."""
    database = pg_database()
    url = database
    if schema is not None:
        registry_sql(database, f"CREATE SCHEMA {schema}")
        url = _in_schema(database, schema)
    init_tenant_outbox(url)
    source = open_source("pos:acme", SourceSettings(**tenant_source(url, "acme")))  # type: ignore[arg-type]
    engine = create_engine(database)
    try:
        with engine.connect() as earlier:
            key = {"k": _earlier_key("public")}
            assert earlier.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), key).scalar()
            assert not source.try_lead()
            earlier.execute(sa.text("SELECT pg_advisory_unlock(:k)"), key)
            assert source.try_lead()
            assert not earlier.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), key).scalar()
            source.close()
            assert earlier.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), key).scalar()
    finally:
        source.close()
        engine.dispose()


def test_a_table_found_outside_the_schema_the_dsn_names_is_not_led(
    pg_database: Callable[[], str],
) -> None:
    """``search_path=tenant_a,public`` before tenant_a is made: ``outbox init`` made the table
    in public, where another tenant's DSN (no search path) reads it too. The registry takes
    the two for two outboxes (tenant_a and public), so the relay does not lead it."""
    database = pg_database()
    in_a = _in_schema(database, "tenant_a,public")
    init_tenant_outbox(in_a)  # no schema tenant_a: made in public
    source = open_source("pos:acme", SourceSettings(**tenant_source(in_a, "acme")))  # type: ignore[arg-type]
    try:
        with pytest.raises(SourceError, match="tenant_a"):
            source.try_lead()
        assert not source.leading  # type: ignore[attr-defined]
        registry_sql(database, "CREATE SCHEMA tenant_a")
        init_tenant_outbox(in_a)  # made in tenant_a now: led
        assert source.try_lead()
    finally:
        source.close()
