"""A tenant whose DSN password is a plain word (``orders``) never has it shown: the masking
looks for DSN and ``password=`` forms, and a server refusing a connection quotes its user
(hidden since tests/test_registry_user_names.py), so any message quoting the password
itself would show it bare. Every way a tenant's database can fail here (missing database,
role, port, MySQL refusal, bad options, an unparsable DSN) goes through ``relay --once``
(console, JSON, debug), ``status``, ``status --json``, ``health``, ``outbox init`` and the
relay threads' logs: the word is in none of them (DESIGN.md invariant 6). A guard: no path
showed it when it was written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from structlog.testing import capture_logs

from config import load_settings
from outbox.log import EventLog
from outbox.tenant_registry import TenantRegistry
from outbox.tenant_relays import TenantRelays
from tests.broker_helpers import wait_until
from tests.cli_helpers import run_cli, write_config
from tests.tenant_fixtures import init_tenant_outbox, make_registry, record_sales, tenant_source
from tests.tenant_helpers import config_for

WORD = "orders"
MISSING = "rm_test_nonexistent"


def _pw(url: str, **parts: object) -> str:
    return sa.make_url(url).set(password=WORD, **parts).render_as_string(False)


def _tenants(pg: Callable[[], str], my: Callable[[], str]) -> dict[str, str]:
    def fresh() -> str:
        url = pg()
        init_tenant_outbox(url)
        return url

    good, mysql = fresh(), my()
    record_sales(good, [("r1", "2026-11-26", 100, 1)])
    return {
        "acme": _pw(good),  # trust auth: relayed
        "globex": _pw(good, database=MISSING),
        "initech": _pw(mysql),  # MariaDB refuses root's wrong password
        "initech2": _pw(mysql, database=MISSING),
        "umbrella": _pw(fresh(), port=1),
        "hooli": _pw(fresh(), username="rm_nobody_pw"),
        "hooli2": _pw(fresh(), username=WORD),  # the word as user too: hidden as a user
        "stark": _pw(fresh()) + "?sslmode=bogus",
        "wayne": sa.make_url(fresh()).render_as_string(False) + f"?password={WORD}&bogus=1",
        "tyrell": f"postgresql://postgres:{WORD}/rm_db",  # no host: the password read as port
        "cyberdyne": f"host=127.0.0.1 password={WORD} dbname=x",
    }


def test_a_plain_word_password_of_a_tenant_is_never_shown(
    pg_database: Callable[[], str], mysql_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry = pg_database(), pg_database()
    make_registry(registry, _tenants(pg_database, mysql_database))  # type: ignore[arg-type]
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    shown = []
    for command in (
        ["relay", "--once"],
        ["relay", "--once", "--log-json", "--log-level", "debug"],
        ["status"],
        ["health"],
        ["outbox", "init", "--source", "pos"],
    ):
        result = run_cli([*command, "--config", str(config)])
        assert result.exit_code in (1, 3), result.output
        assert WORD not in result.stdout + result.stderr, result.stdout + result.stderr
        shown.append(result.stdout + result.stderr)
    status = run_cli(["status", "--json", "--config", str(config)])
    assert WORD not in status.stdout + status.stderr, status.stdout
    errors = {s["source"]: s["error"] for s in json.loads(status.stdout)["sources"]}
    assert errors["pos:acme"] is None
    assert f'database "{MISSING}" does not exist' in errors["pos:globex"]
    assert "Access denied for user '(name hidden)'" in errors["pos:initech"]
    assert f"Unknown database '{MISSING}'" in errors["pos:initech2"] or (
        "Access denied" in errors["pos:initech2"]
    )
    assert "Connection refused" in errors["pos:umbrella"]
    assert 'role "(name hidden)" does not exist' in errors["pos:hooli"]
    assert 'role "(name hidden)" does not exist' in errors["pos:hooli2"]
    assert 'invalid sslmode value: "bogus"' in errors["pos:stark"]
    assert 'invalid connection option "bogus"' in errors["pos:wayne"]
    assert "DSN refused: the port is not a number" in errors["pos:tyrell"]
    assert "DSN refused: expected a DSN starting with" in errors["pos:cyberdyne"]
    assert "pos:acme: relayed 1" in shown[0]

    settings = load_settings(config)
    log = EventLog(store)
    relays = TenantRelays(TenantRegistry("pos", settings.tenants["pos"]), log, settings.relay)
    try:
        with capture_logs() as logs:
            relays.refresh()
            assert wait_until(
                lambda: len([e for e in logs if e["event"] == "relay step failed; retrying"]) >= 6,
                20,
            ), logs
        assert WORD not in repr(logs), logs
    finally:
        relays.stop_all()
        relays.registry.close()
        log.close()


def test_a_plain_word_password_of_a_static_tenant_source_or_registry_is_never_shown(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store = pg_database()
    missing = _pw(pg_database(), database=MISSING)
    unreadable = _pw(pg_database(), port=1)
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "store": {"url": store},
            "projections": ["tests.tenant_fixtures"],
            "sources": {"shop:acme": tenant_source(missing, "acme")},
            "tenants": {"pos": {"url": unreadable, "query": "SELECT tenant_id, dsn FROM t"}},
        },
    )
    migrated = run_cli(["migrate", "--config", str(config)])
    assert migrated.exit_code == 0, migrated.stdout + migrated.stderr
    for command in (["relay", "--once"], ["status"], ["status", "--json"], ["health"]):
        result = run_cli([*command, "--config", str(config)])
        text = result.stdout + result.stderr
        assert result.exit_code != 0, text
        assert WORD not in text, text
        assert MISSING in text and "127.0.0.1:1/" in text, text  # both refusals, named
