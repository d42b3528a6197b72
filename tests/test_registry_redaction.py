"""A tenant's database that cannot be read is named by where it is only (scheme, host, port,
database): neither its user, password nor DSN query reaches the relay's log or ``relay
--once``'s error lines (DESIGN.md invariant 6: tenant credentials are never logged)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from structlog.testing import capture_logs

from config import load_settings
from outbox.log import EventLog
from outbox.tenant_registry import TenantRegistry
from outbox.tenant_relays import TenantRelays
from tests.broker_helpers import wait_until
from tests.cli_helpers import run_cli
from tests.tenant_fixtures import make_registry
from tests.tenant_helpers import config_for

USER = "postgres"  # a role the server has: its error names the database, not the user
QUERY = "application_name=rm_leak_q"


def _absent(url: str) -> tuple[str, str]:
    """A DSN (user, password, query) of a database the server does not have, and where it is."""
    name = f"rm_absent_{uuid.uuid4().hex[:12]}"
    where = sa.make_url(url).set(database=name)
    dsn = where.set(username=USER, password="leak-s3cret").render_as_string(False)
    return f"{dsn}?{QUERY}", f"postgresql://{where.host}:{where.port}/{name}"


def _leaks(text: str) -> list[str]:
    leaks = (f"{USER}:", f"{USER}@", "***@", "s3cret", "rm_leak_q", "application_name")
    return [leak for leak in leaks if leak in text]


def test_a_tenants_dsn_is_logged_and_printed_without_user_password_or_query(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry = pg_database(), pg_database()
    dsn, where = _absent(store)
    make_registry(registry, {"gone": dsn})
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    relayed = run_cli(["relay", "--once", "--config", str(config)])
    assert relayed.exit_code == 3, relayed.output
    (line,) = [x for x in relayed.output.splitlines() if "does not exist" in x]
    assert line.startswith("pos:gone: ") and where in line, line  # the server's message stays
    assert not _leaks(relayed.output), relayed.output

    settings = load_settings(config)
    log = EventLog(store)
    relays = TenantRelays(TenantRegistry("pos", settings.tenants["pos"]), log, settings.relay)
    try:
        with capture_logs() as logs:
            relays.refresh()
            assert wait_until(
                lambda: any(e["event"] == "relay step failed; retrying" for e in logs), 10
            ), logs
        (failed, *_) = [e for e in logs if e["event"] == "relay step failed; retrying"]
        assert where in failed["error"], failed
        assert not _leaks(repr(logs)), logs
    finally:
        relays.stop_all()
        relays.registry.close()
        log.close()
