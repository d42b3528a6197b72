"""Two rows of one tenant registry naming one database: the member the event log has
events of keeps relaying it (a mistyped new row does not stop it), the new row is refused
naming both tenants, the registry and the row; when the log has events of neither, both
are refused (``tests/test_shared_outboxes.py``). ``status`` and ``health`` show such a
refusal as a configuration conflict, not as an unreachable database, and ``relay --once``
and ``run --until-caught-up`` exit 2 for it as ``status`` does."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from config import load_settings
from outbox.log import EventLog
from outbox.tenant_registry import TenantRegistry
from outbox.tenant_relays import TenantRelays
from tests.broker_helpers import wait_until
from tests.cli_helpers import run_cli, with_password
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    pending_rows,
    record_sales,
    registry_sql,
    sales_for,
)
from tests.tenant_helpers import config_for

REFUSAL = (
    "tenant registry 'pos', tenant 'acme2': row 2 names the same database and outbox table as "
    "tenant 'acme' (row 1), which relays it: not relayed (each tenant needs a database of its "
    "own)"
)


def test_a_new_row_naming_a_relayed_database_is_refused_and_the_relaying_tenant_goes_on(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, shared, zeta = (pg_database() for _ in range(4))
    for url in (shared, zeta):
        init_tenant_outbox(url)
    make_registry(registry, {"acme": shared, "zeta": zeta})
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    record_sales(shared, sales_for(1, 2))
    assert run_cli(["relay", "--once", "--config", str(config)]).exit_code == 0

    settings = load_settings(config)
    log = EventLog(store)
    relays = TenantRelays(TenantRegistry("pos", settings.tenants["pos"]), log, settings.relay)
    try:
        relays.refresh()
        assert relays.members == ["pos:acme", "pos:zeta"]
        # A mistyped new row (another spelling of acme's DSN, a password added).
        registry_sql(
            registry,
            "INSERT INTO tenants VALUES ('acme2', :d, true)",
            d=with_password(shared, "acme2-s3cret").replace("127.0.0.1", "localhost"),
        )
        relays.refresh()
        assert relays.members == ["pos:acme", "pos:zeta"]  # acme relays on
        record_sales(shared, [("r0", "2026-11-27", 100, 3)])
        assert wait_until(lambda: log.heads().get("pos:acme") == 3, 10)
    finally:
        relays.stop_all()
        relays.registry.close()
    try:
        record_sales(shared, [("r0", "2026-11-28", 100, 4)])
        relayed = run_cli(["relay", "--once", "--config", str(config)])
        assert REFUSAL in relayed.output, relayed.output
        assert "pos:acme: relayed 1" in relayed.stdout
        assert "tenant 'acme': the same database" not in relayed.output
        assert {s: h for s, h in log.heads().items() if h} == {"pos:acme": 4}
        assert pending_rows(shared) == 0
        assert "acme2-s3cret" not in relayed.output

        status = run_cli(["status", "--json", "--config", str(config)])
        assert REFUSAL in status.stdout and "acme2-s3cret" not in status.output
        assert "tenant registry 'pos', tenant 'acme':" not in status.stdout
    finally:
        log.close()


def test_status_and_health_show_a_member_refused_for_a_shared_database_as_a_conflict(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, shared, zeta = (pg_database() for _ in range(4))
    for url in (shared, zeta):
        init_tenant_outbox(url)
    make_registry(registry, {"acme": shared, "globex": shared, "zeta": zeta})
    config = str(config_for(tmp_path, store, registry))
    assert run_cli(["migrate", "--config", config]).exit_code == 0
    conflict = "pos:acme: conflict: tenant registry 'pos', tenant 'acme': the same database"

    status = run_cli(["status", "--timeout", "30", "--config", config])
    assert status.exit_code == 2, status.output  # a configuration problem, not unreachable
    assert conflict in " ".join(status.stderr.split()), status.stderr
    sources_table = status.stdout.split("projections")[0]
    marked = r"[^\n]*(\n[^\n]*)?\(conflict\)"  # the table wraps at 80 columns
    assert re.search("pos:acme" + marked, sources_table), sources_table
    assert re.search("pos:globex" + marked, sources_table), sources_table
    assert sources_table.count("(conflict)") == 2
    report = run_cli(["status", "--json", "--timeout", "30", "--config", config])
    assert report.exit_code == 2
    sources = {s["source"]: s for s in json.loads(report.stdout)["sources"]}
    assert sources["pos:acme"]["database_conflict"] is True
    assert sources["pos:zeta"]["database_conflict"] is False
    assert sources["pos:zeta"]["error"] is None

    # --timeout 30: the default 1.5 s is taken for unreachable on a loaded machine.
    health = run_cli(["health", "--timeout", "30", "--config", config])
    assert health.exit_code == 1, health.output
    assert "source pos:acme: conflict: tenant registry 'pos'" in health.output
    assert "unreachable" not in health.output
    # relay --once and run --until-caught-up exit as status does, after relaying the others.
    record_sales(zeta, sales_for(1, 2))
    relayed = run_cli(["relay", "--once", "--config", config])
    assert relayed.exit_code == 2, relayed.output
    assert "pos:zeta: relayed 2" in relayed.stdout
    caught_up = run_cli(["run", "--until-caught-up", "--config", config])
    assert caught_up.exit_code == 2, caught_up.output
    assert "tenant 'acme': the same database" in caught_up.output

    # A tenant database that cannot be reached as well: exit 3, as for any unreachable one.
    registry_sql(
        registry,
        "INSERT INTO tenants VALUES ('deadco', 'postgresql://pos@127.0.0.1:1/pos', true)",
    )
    status = run_cli(["status", "--timeout", "30", "--config", config])
    assert status.exit_code == 3, status.output
    assert conflict in " ".join(status.stderr.split())
    assert "pos:deadco: conflict" not in status.stderr
    for command in (["relay", "--once"], ["run", "--until-caught-up"]):
        result = run_cli([*command, "--config", config])
        assert result.exit_code == 3, (command, result.output)
