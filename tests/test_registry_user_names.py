"""A tenant database that refuses the tenant's user is named by where it is only: the server's
refusal quotes the user name (PostgreSQL ``role "X" does not exist``, MySQL ``Access denied
for user 'X'@'host'``), which reached ``relay --once``, ``status``, ``health``, ``outbox
init`` and the relay's log (DESIGN.md invariant 6: tenant credentials are never logged)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
import structlog
from structlog.testing import capture_logs

from config import load_settings
from outbox.db import USER_HIDDEN
from outbox.log import EventLog
from outbox.tenant_registry import TenantRegistry
from outbox.tenant_relays import TenantRelays
from tests.broker_helpers import wait_until
from tests.cli_helpers import run_cli
from tests.tenant_fixtures import make_registry
from tests.tenant_helpers import config_for
from workers.logs import configure_logging

SECRET = "u-s3cret"


def _user() -> str:
    return f"rm_nobody_{uuid.uuid4().hex[:10]}"  # no such role or user on either server


def _as(url: str, user: str) -> str:
    return sa.make_url(url).set(username=user, password=SECRET).render_as_string(False)


def _leaks(text: str, users: list[str]) -> list[str]:
    return [word for word in [*users, SECRET] if word in text]


def test_a_tenant_user_the_server_refuses_is_never_shown(
    pg_database: Callable[[], str], mysql_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry = pg_database(), pg_database()
    pg_user, my_user = _user(), _user()
    tenants = {"acme": _as(pg_database(), pg_user), "globex": _as(mysql_database(), my_user)}
    make_registry(registry, tenants)  # type: ignore[arg-type]
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    users = [pg_user, my_user]

    for command in (["relay", "--once"], ["health"], ["outbox", "init", "--source", "pos"]):
        result = run_cli([*command, "--config", str(config)])
        assert result.exit_code in (1, 3), result.output
        assert not _leaks(result.output, users), result.output
        assert result.output.count(USER_HIDDEN) >= 2, result.output  # the refusals stay

    status = run_cli(["status", "--json", "--config", str(config)])
    errors = {s["source"]: s["error"] for s in json.loads(status.stdout)["sources"]}
    assert 'role "(name hidden)" does not exist' in errors["pos:acme"], errors
    assert "Access denied for user '(name hidden)'@" in errors["pos:globex"], errors
    assert not _leaks(status.output, users), status.output

    settings = load_settings(config)
    log = EventLog(store)
    relays = TenantRelays(TenantRegistry("pos", settings.tenants["pos"]), log, settings.relay)
    try:
        with capture_logs() as logs:
            relays.refresh()
            assert wait_until(
                lambda: len([e for e in logs if e["event"] == "relay step failed; retrying"]) >= 2,
                10,
            ), logs
        assert not _leaks(repr(logs), users), logs
    finally:
        relays.stop_all()
        relays.registry.close()
        log.close()


@pytest.mark.parametrize("json_output", [False, True], ids=["console", "json"])
def test_a_logged_connection_error_does_not_show_the_user(
    pg_database: Callable[[], str], capsys: pytest.CaptureFixture[str], json_output: bool
) -> None:
    user = _user()
    dsn = sa.make_url(_as(pg_database(), user)).set(drivername="postgresql")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("info", json_output=json_output)
    try:
        try:
            psycopg.connect(dsn.render_as_string(False), connect_timeout=5).close()
        except psycopg.OperationalError:
            structlog.get_logger("test").exception("tenant registry refresh failed")
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "OperationalError" in err and USER_HIDDEN in err, err
    assert not _leaks(err, [user]), err
