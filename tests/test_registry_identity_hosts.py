"""Which server a registry row's PostgreSQL DSN reaches, as libpq picks it
(``config.outbox_identity``): ``?hostaddr=`` over the host name, a list of hosts, and a
``?service=`` of a service file. Each DSN here is first shown to reach the database it
is said to."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from outbox.tenant_registry import TenantRegistry
from tests.tenant_fixtures import make_registry, registry_sql
from tests.tenant_helpers import config_for

SAME = "the same database and outbox table as"


def _reaches(url: str) -> str:
    """The database ``url`` reaches (each spelling here works)."""
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SELECT current_database()").scalar_one())
    finally:
        engine.dispose()


def _read(registry_url: str, tmp_path: Path, store: str) -> tuple[list[str], str]:
    settings = load_settings(config_for(tmp_path, store, registry_url))
    registry = TenantRegistry("pos", settings.tenants["pos"], settings.sources)
    try:
        members = registry.read()
    finally:
        registry.close()
    return sorted(members.sources), " ".join(str(p) for p in members.problems)


def test_hostaddr_and_a_list_of_hosts_reach_the_server_they_name(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, shared, other = (pg_database() for _ in range(4))
    url = sa.make_url(shared)
    name, port = str(url.database), url.port
    by_addr = f"postgresql://{url.username}@db.invalid:{port}/{name}?hostaddr=127.0.0.1"
    listed = f"postgresql://{url.username}@/{name}?host=localhost:{port}&host=127.0.0.1:{port}"
    elsewhere = f"postgresql://{url.username}@127.0.0.1:{port}/{other}?hostaddr=127.0.0.1"
    assert {_reaches(u) for u in (shared, by_addr, listed)} == {name}
    make_registry(registry, {"acme": shared, "globex": by_addr, "kilo": listed, "zeta": elsewhere})
    members, problems = _read(registry, tmp_path, store)
    assert members == ["pos:zeta"], problems
    assert f"tenant 'globex': {SAME} tenant 'acme', tenant 'kilo'" in problems


def test_service_rows_name_the_databases_of_their_services(
    pg_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, registry, one, two = (pg_database() for _ in range(4))
    services = tmp_path / "pg_service.conf"
    lines = []
    for service, url in (("one", one), ("two", two)):
        parsed = sa.make_url(url)
        lines += [f"[{service}]", f"host={parsed.host}", f"port={parsed.port}"]
        lines += [f"dbname={parsed.database}", f"user={parsed.username}", ""]
    services.write_text("# tenants' databases\n" + "\n".join(lines))
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    by_one, by_two = "postgresql:///?service=one", "postgresql:///?service=two"
    assert _reaches(by_one) == sa.make_url(one).database
    assert _reaches(by_two) == sa.make_url(two).database
    make_registry(registry, {"acme": by_one, "globex": by_two})
    assert _read(registry, tmp_path, store) == (["pos:acme", "pos:globex"], "")

    # The database a service names, spelled out: one outbox with the service's.
    registry_sql(registry, "UPDATE tenants SET dsn = :d WHERE tenant_id = 'globex'", d=one)
    members, problems = _read(registry, tmp_path, store)
    assert members == [], problems
    assert f"tenant 'acme': {SAME} tenant 'globex'" in problems


def test_a_list_of_hosts_shares_the_outbox_of_each_of_its_servers(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    """libpq connects to the first host that answers: a row listing a standby after the
    server (``db.invalid`` here, never reached) reads the server's outbox."""
    store, registry, shared = (pg_database() for _ in range(3))
    url = sa.make_url(shared)
    name, port = str(url.database), url.port
    with_standby = (
        f"postgresql://{url.username}@/{name}?host=127.0.0.1:{port}&host=db.invalid:{port}"
    )
    assert _reaches(with_standby) == name
    make_registry(registry, {"acme": shared, "globex": with_standby})
    members, problems = _read(registry, tmp_path, store)
    assert members == [], problems
    assert f"tenant 'acme': {SAME} tenant 'globex'" in problems
