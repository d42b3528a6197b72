"""The PostgreSQL relay's leader lock of an outbox table found by the search path (a DSN's
``?options=-csearch_path=``): every relay of one table takes one key, whenever it asks."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import sqlalchemy as sa

from config import SourceSettings
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


def test_the_table_in_public_keeps_the_key_of_earlier_releases(
    pg_database: Callable[[], str],
) -> None:
    """A relay of an earlier release (key ``readmodel-relay:public.<table>``) and this one
    exclude each other during a rolling upgrade."""
    import hashlib

    database = pg_database()
    init_tenant_outbox(database)
    source = open_source("pos:acme", SourceSettings(**tenant_source(database, "acme")))  # type: ignore[arg-type]
    old = hashlib.blake2b(b"readmodel-relay:public.outbox", digest_size=8).digest()
    engine = sa.create_engine(sa.make_url(database).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            key = int.from_bytes(old, "big", signed=True)
            assert conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            assert not source.try_lead()
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            assert source.try_lead()
            assert not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
    finally:
        source.close()
        engine.dispose()
