"""DESIGN invariant 6 inside a ``@query``: the reader a query run for tenant A receives stays
A's. ``read.for_tenant(B)`` returned B's rows (and a cached query kept them under A's key),
and ``read.engine`` / ``read.database`` reached every tenant's rows; now both are refused,
naming the query, while an unscoped reader (an operator's) may still scope and has the
store. Real PostgreSQL, SQLite, MongoDB-wire and Redis (near cache on)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from outbox.log import EventLog
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.query_reader import QueryError, SqlReader
from projections.query_service import Queries
from projections.redis_cache import RedisCache
from tests.cache_helpers import REDIS_URL
from tests.cli_helpers import run_cli, write_config
from tests.projection_fixtures import append_tenant_events, engine_on
from tests.tenant_query_fixtures import ScopeAccounts, ScopeDocAccounts, scope_accounts

OPENED = [
    ("acme", "a1", "Opened", {"owner": "ann"}),
    ("globex", "g1", "Opened", {"owner": "bob"}),
]


def _entries(prefix: str, projection: str) -> set[str]:
    start = f"{prefix}e:{projection}:"
    with redis.Redis.from_url(REDIS_URL) as client:
        return {k.decode()[len(start) :] for k in client.scan_iter(match=start + "*")}


@pytest.fixture
def cache(redis_key_prefix: str) -> Iterator[RedisCache]:
    near = RedisCache(REDIS_URL, key_prefix=redis_key_prefix, near_cache_size=100, timeout=5.0)
    yield near
    near.close()


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_tenants_query_cannot_read_another_tenants_rows_through_its_reader(
    kind: str,
    database_for: Callable[[str], str],
    cache: RedisCache,
    redis_key_prefix: str,
    tmp_path: Path,
) -> None:
    url = database_for(kind)
    with engine_on(url, [ScopeAccounts()], cache=cache) as (log, _, engine):
        append_tenant_events(log, OPENED)
        engine.catch_up(deadline=30)
        q = Queries.from_engine(engine, log.engine)

        for _ in range(3):  # Redis, then the near cache: each tenant's own entry
            with pytest.raises(QueryError) as refused:
                q.run("scope_accounts", "peek", "globex", tenant="acme")
            assert str(refused.value) == (
                "query scope_accounts.peek reads for one tenant: its reader cannot be scoped "
                "to another (read.for_tenant); a query reads the rows of the tenant it is run for"
            )
            assert q.run("scope_accounts", "peek", "acme", tenant="acme").value == ["a1"]
            assert q.run("scope_accounts", "peek", "globex", tenant="globex").value == ["g1"]
            assert q.get("scope_accounts", "g1", tenant="globex").value["owner"] == "bob"
            assert q.get("scope_accounts", "g1", tenant="acme").value is None
        assert _entries(redis_key_prefix, "scope_accounts") == {
            'tenant:"acme":get:scope_accounts:["g1"]',
            'tenant:"globex":get:scope_accounts:["g1"]',
            'tenant:"acme":q:peek:[["acme"],[]]',
            'tenant:"globex":q:peek:[["globex"],[]]',
        }

        with pytest.raises(QueryError, match=r"through_engine reads for one tenant: read\.engine"):
            q.run("scope_accounts", "through_engine", tenant="acme")
        for attribute, value in (("tenant", "globex"), ("tenant_column", "owner")):
            with pytest.raises(AttributeError):
                q.run("scope_accounts", "retarget", attribute, value, tenant="acme")
        with pytest.raises(QueryError, match="projection 'scope_accounts' reads for one tenant"):
            q.reader("scope_accounts", "acme").for_tenant("globex")

        operator = SqlReader(log.engine, "scope_accounts", [scope_accounts], tenant_column="tenant")
        assert operator.engine is log.engine  # unscoped: the documented escape hatch
        assert operator.for_tenant("globex").get(scope_accounts, "g1")["owner"] == "bob"
        assert operator.for_tenant("globex").get(scope_accounts, "a1") is None

    config = write_config(
        tmp_path / "readmodel.toml",
        {"store": {"url": url}, "projections": ["tests.tenant_query_fixtures:ScopeAccounts"]},
    )
    cli = ["query", "scope_accounts", "--name", "peek", "--tenant", "acme", "--config"]
    refused = run_cli([*cli[:2], "globex", *cli[2:], str(config)])
    assert refused.exit_code == 2 and "g1" not in refused.stdout, refused.output
    assert "query scope_accounts.peek reads for one tenant" in refused.stderr
    own = run_cli([*cli[:2], "acme", *cli[2:], str(config), "--json"])
    assert own.exit_code == 0, own.output
    assert json.loads(own.stdout)["result"] == ["a1"]


def test_a_tenants_document_query_cannot_read_another_tenants_documents(
    pg_database: Callable[[], str], mongo_database: Callable[[], str], cache: RedisCache
) -> None:
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    projection = ScopeDocAccounts()
    store.create_tables([projection])
    engine = ProjectionEngine(LogReader(log), [projection], {"docs": store}, cache=cache)
    try:
        append_tenant_events(log, OPENED)
        engine.catch_up(deadline=30)
        q = Queries.from_engine(engine, log.engine)
        with pytest.raises(QueryError, match=r"query doc_accounts\.peek reads for one tenant"):
            q.run("doc_accounts", "peek", "globex", tenant="acme")
        assert q.run("doc_accounts", "peek", "acme", tenant="acme").value == ["a1"]
        with pytest.raises(QueryError, match=r"through_database reads .*: read\.database"):
            q.run("doc_accounts", "through_database", tenant="acme")
        with pytest.raises(AttributeError):
            q.reader("doc_accounts", "acme").tenant = "globex"  # type: ignore[misc]
    finally:
        engine.close()
        log.close()
