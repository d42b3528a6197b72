"""``readmodel outbox init`` checks a registry's rows against the configuration's other
registries as the relay does: of two registries' rows naming one database, the member the
relay keeps gets its outbox, the other is refused with the relay's message (exit 2); a
member the event log has no events of waits while another registry cannot be read (exit 3,
as ``relay --once``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.cli_helpers import run_cli, with_password
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    record_sales,
    registry_sql,
    sales_for,
)
from tests.tenant_helpers import registries_config

SAME = "the same database and outbox table as"
READY = "outbox table 'outbox' is ready"


def _init(config: Path, source: str) -> tuple[int, str, str]:
    made = run_cli(["outbox", "init", "--source", source, "--config", str(config)])
    return made.exit_code, made.stdout, made.output


def test_init_refuses_a_row_another_registry_keeps_with_the_relays_message(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, pos, shop, shared, zeta, kilo = (pg_database() for _ in range(6))
    make_registry(pos, {"acme": shared, "zeta": zeta})
    make_registry(shop, {"acme2": with_password(shared, "shop-s3cret"), "kilo": kilo})
    config = registries_config(tmp_path, store, {"shop": shop, "pos": pos})
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    refusal = (
        f"tenant registry 'shop', tenant 'acme2': {SAME} tenant 'acme' of tenant registry "
        f"'pos', which relays it: not relayed (each tenant needs a database of its own)"
    )

    code, stdout, output = _init(config, "shop")
    assert refusal in output
    assert f"shop:kilo: {READY}" in stdout and "shop:acme2" not in stdout
    assert code == 2, output
    assert "shop-s3cret" not in output

    code, stdout, output = _init(config, "shop:acme2")
    assert refusal in output and "lists no" not in output
    assert code == 2, output

    code, stdout, output = _init(config, "pos")  # pos:acme, first by name, keeps it
    assert f"pos:acme: {READY}" in stdout and f"pos:zeta: {READY}" in stdout
    assert code == 0, output

    relayed = run_cli(["relay", "--once", "--config", str(config)])
    assert refusal in relayed.output and relayed.exit_code == 2  # the relay says the same


def test_init_leaves_the_database_to_the_member_already_relaying_it(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, pos, shop, shared, zeta = (pg_database() for _ in range(5))
    for url in (shared, zeta):
        init_tenant_outbox(url)
    make_registry(pos, {"zeta": zeta})
    make_registry(shop, {"acme": shared})
    config = registries_config(tmp_path, store, {"pos": pos, "shop": shop})
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    record_sales(shared, sales_for(1, 2))
    assert run_cli(["relay", "--once", "--config", str(config)]).exit_code == 0

    # pos, first by name, now lists the same database: shop:acme relayed it, and keeps it.
    registry_sql(pos, "INSERT INTO tenants VALUES ('acme', :d, true)", d=shared)
    refusal = (
        f"tenant registry 'pos', tenant 'acme': {SAME} tenant 'acme' of tenant registry 'shop'"
    )
    code, stdout, output = _init(config, "pos")
    assert refusal in output
    assert f"pos:zeta: {READY}" in stdout and "pos:acme:" not in stdout
    assert code == 2, output
    code, stdout, output = _init(config, "shop")
    assert f"shop:acme: {READY}" in stdout and code == 0, output


def test_init_refuses_both_registries_rows_when_the_event_log_cannot_be_read(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    pos, shop, shared, zeta = (pg_database() for _ in range(4))
    store = "postgresql://postgres@127.0.0.1:1/readmodel"  # nothing listens there
    make_registry(pos, {"acme": shared, "zeta": zeta})
    make_registry(shop, {"acme2": shared.replace("127.0.0.1", "localhost")})
    config = registries_config(tmp_path, store, {"pos": pos, "shop": shop})
    code, stdout, output = _init(config, "pos")
    other = "tenant 'acme2' of tenant registry 'shop'"
    assert f"tenant registry 'pos', tenant 'acme': {SAME} {other}: not relayed" in output
    assert "the event log cannot be read" in output and "both are refused" in output
    assert f"pos:zeta: {READY}" in stdout and "pos:acme:" not in stdout
    assert code == 2, output
    code, stdout, output = _init(config, "shop")
    assert f"tenant registry 'shop', tenant 'acme2': {SAME} tenant 'acme' of" in output
    assert "shop:acme2:" not in stdout and code == 2, output


def test_init_of_a_new_member_waits_while_another_registry_cannot_be_read(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, pos, zeta = (pg_database() for _ in range(3))
    shop = "postgresql://postgres@127.0.0.1:1/shop"  # nothing listens there
    make_registry(pos, {"zeta": zeta})
    config = registries_config(tmp_path, store, {"pos": pos, "shop": shop})
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    code, stdout, output = _init(config, "pos")
    assert "tenant registry 'pos', tenant 'zeta': waits until tenant registry 'shop'" in output
    assert "pos:zeta:" not in stdout
    assert code == 3, output
    relayed = run_cli(["relay", "--once", "--config", str(config)])
    assert "waits until tenant registry 'shop'" in relayed.output and relayed.exit_code == 3


def test_init_says_the_event_log_cannot_be_read_when_a_member_waits_for_that_reason(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    pos, zeta = (pg_database() for _ in range(2))
    store = "postgresql://postgres@127.0.0.1:1/readmodel"  # nothing listens there
    shop = "postgresql://postgres@127.0.0.1:1/shop"
    make_registry(pos, {"zeta": zeta})
    config = registries_config(tmp_path, store, {"pos": pos, "shop": shop})
    code, stdout, output = _init(config, "pos")
    (line,) = [x for x in output.splitlines() if "tenant 'zeta': waits" in x]
    assert "waits until tenant registry 'shop' is read: the event log cannot be read" in line
    assert "has no events" not in output
    assert "pos:zeta:" not in stdout and code == 3, output


def test_init_of_one_member_says_only_what_concerns_that_member(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, pos, acme, zeta = (pg_database() for _ in range(4))
    shop = "postgresql://postgres@127.0.0.1:1/shop"  # nothing listens there
    init_tenant_outbox(acme)
    make_registry(pos, {"acme": acme})
    config = registries_config(tmp_path, store, {"pos": pos})
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    record_sales(acme, sales_for(1, 2))
    assert run_cli(["relay", "--once", "--config", str(config)]).exit_code == 0
    # acme has events: it goes on while shop cannot be read; zeta (new) waits; badco is bad.
    registry_sql(pos, "INSERT INTO tenants VALUES ('zeta', :d, true)", d=zeta)
    registry_sql(pos, "INSERT INTO tenants VALUES ('badco', 'http://badco@host/db', true)")
    config = registries_config(tmp_path, store, {"pos": pos, "shop": shop})

    code, stdout, output = _init(config, "pos:acme")
    assert f"pos:acme: {READY}" in stdout
    assert "zeta" not in output and "badco" not in output and "shop" not in output, output
    assert code == 0, output

    code, stdout, output = _init(config, "pos:zeta")  # what blocks it: shop's error
    assert "tenant 'zeta': waits until tenant registry 'shop'" in output
    assert "127.0.0.1:1" in output and "badco" not in output and "acme" not in output
    assert code == 3, output

    code, stdout, output = _init(config, "pos")  # the whole registry: the full report
    assert f"pos:acme: {READY}" in stdout
    assert "tenant 'zeta': waits" in output and "tenant 'badco'" in output
    assert code == 3, output
