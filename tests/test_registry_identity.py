"""Which database a registry row names, however its DSN spells it (``config.outbox_identity``):
libpq's ``?dbname=`` over the path, ``?host=``/``?port=``, a Unix socket as the local server
on its port, and a ``search_path`` in ``?options=`` (two schemas of one database, each with
its outbox table, are two outboxes; one schema spelled twice is one)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

from config import load_settings
from outbox.sources import open_source
from outbox.tenant_registry import TenantRegistry
from tests.cli_helpers import run_cli
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    pending_rows,
    record_sales,
    registry_sql,
    sales_for,
)
from tests.tenant_helpers import config_for

SAME = "the same database and outbox table as"


def _spelled(url: str, path: str, **query: str) -> str:
    """``url``'s server with the path ``path`` (a database name, or "") and ``query``."""
    parsed = sa.make_url(url)
    rest = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    where = f"{parsed.host}:{parsed.port}" if "host" not in query else ""
    return f"postgresql://{parsed.username}@{where}/{path}" + (f"?{rest}" if rest else "")


def _name(url: str) -> str:
    return str(sa.make_url(url).database)


def _read(registry_url: str, tmp_path: Path, store: str) -> tuple[list[str], list[str]]:
    """The members and the problems of the registry ``pos`` (read as the relay does on a
    fresh start)."""
    settings = load_settings(config_for(tmp_path, store, registry_url))
    registry = TenantRegistry("pos", settings.tenants["pos"], settings.sources)
    try:
        members = registry.read()
    finally:
        registry.close()
    return sorted(members.sources), [str(p) for p in members.problems]


def test_dbname_in_the_query_names_the_database(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, shared, zeta, kilo = (pg_database() for _ in range(5))
    for url in (shared, zeta, kilo):
        init_tenant_outbox(url)
    make_registry(
        registry,
        {
            "acme": shared,
            # ?dbname= overrides the path: the same database as acme's.
            "globex": _spelled(shared, "postgres", dbname=_name(shared)),
            # No path: the database is ?dbname=, not the user name (zeta and kilo differ).
            "zeta": _spelled(zeta, "", dbname=_name(zeta)),
            "kilo": _spelled(kilo, "", dbname=_name(kilo)),
        },
    )
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    record_sales(shared, sales_for(1, 3))
    record_sales(zeta, sales_for(1, 2))
    record_sales(kilo, sales_for(1, 1))

    relayed = run_cli(["relay", "--once", "--config", str(config)])
    assert relayed.exit_code == 2, relayed.output
    assert "pos:zeta: relayed 2" in relayed.stdout and "pos:kilo: relayed 1" in relayed.stdout
    assert f"tenant 'acme': {SAME} tenant 'globex': not relayed" in relayed.output
    assert f"tenant 'globex': {SAME} tenant 'acme': not relayed" in relayed.output
    assert pending_rows(shared) == 3  # neither took the other's rows
    assert pending_rows(zeta) == 0 and pending_rows(kilo) == 0


def test_a_unix_socket_is_the_local_server_on_its_port(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, shared, zeta = (pg_database() for _ in range(4))
    port = str(sa.make_url(shared).port)
    make_registry(
        registry,
        {
            "acme": shared,  # 127.0.0.1
            "globex": _spelled(shared, _name(shared), host="/var/run/postgresql/", port=port),
            "kilo": _spelled(zeta, _name(zeta), host="127.0.0.1", port=port),
            "zeta": zeta,
        },
    )
    members, problems = _read(registry, tmp_path, store)
    assert members == []
    assert f"tenant registry 'pos', tenant 'acme': {SAME} tenant 'globex'" in " ".join(problems)
    assert f"tenant registry 'pos', tenant 'kilo': {SAME} tenant 'zeta'" in " ".join(problems)

    # Another port is another server.
    registry_sql(registry, "DELETE FROM tenants WHERE tenant_id IN ('acme', 'kilo')")
    registry_sql(
        registry,
        "UPDATE tenants SET dsn = :d WHERE tenant_id = 'globex'",
        d=_spelled(shared, _name(shared), host="/var/run/postgresql", port="5439"),
    )
    assert _read(registry, tmp_path, store) == (["pos:globex", "pos:zeta"], [])


def test_tenants_in_two_schemas_of_one_database_are_two_outboxes(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, shared = (pg_database() for _ in range(3))
    registry_sql(shared, "CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b")
    in_a = _spelled(shared, _name(shared), options="-csearch_path=tenant_a")
    in_b = _spelled(shared, _name(shared), options="-csearch_path=tenant_b")
    for url in (in_a, in_b):
        init_tenant_outbox(url)
    # tenant_a spelled another way: one outbox with acme's.
    also_a = _spelled(shared, _name(shared), options='-c search_path="tenant_a",public')
    make_registry(registry, {"acme": in_a, "globex": also_a, "zeta": in_b})
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    record_sales(in_a, sales_for(1, 3))
    record_sales(in_b, sales_for(1, 2))

    relayed = run_cli(["relay", "--once", "--config", str(config)])
    assert relayed.exit_code == 2, relayed.output
    assert "pos:zeta: relayed 2" in relayed.stdout
    assert f"tenant 'acme': {SAME} tenant 'globex': not relayed" in relayed.output
    assert pending_rows(in_a) == 3 and pending_rows(in_b) == 0

    # Without globex, acme relays; both schemas' relays lead at once (one lock each).
    registry_sql(registry, "DELETE FROM tenants WHERE tenant_id = 'globex'")
    relayed = run_cli(["relay", "--once", "--config", str(config)])
    assert relayed.exit_code == 0, relayed.output
    assert "pos:acme: relayed 3" in relayed.stdout
    settings = load_settings(config)
    registry_reader = TenantRegistry("pos", settings.tenants["pos"])
    try:
        members = registry_reader.read().sources
    finally:
        registry_reader.close()
    sources = [open_source(name, s) for name, s in sorted(members.items())]
    try:
        assert [source.try_lead() for source in sources] == [True, True]
    finally:
        for source in sources:
            source.close()


def test_mysql_database_in_the_query_and_a_unix_socket(
    pg_database: Callable[[], str], mysql_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry = pg_database(), pg_database()
    shared, zeta = mysql_database(), mysql_database()
    tcp = sa.make_url(shared)
    server = f"mysql://{tcp.username}@{tcp.host}:{tcp.port}"
    make_registry(
        registry,
        {
            "acme": shared,
            "globex": f"{server}/?database={_name(shared)}",  # the same database as acme's
            # The local server through its socket: zeta's database, no other.
            "zeta": f"mysql://{tcp.username}@localhost/?database={_name(zeta)}"
            "&unix_socket=/run/mysqld/mysqld.sock",
        },
    )
    members, problems = _read(registry, tmp_path, store)
    assert members == ["pos:zeta"]
    assert f"tenant 'acme': {SAME} tenant 'globex'" in " ".join(problems)
