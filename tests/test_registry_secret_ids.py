"""A tenant registry query that selects a secret first (the conninfo/DSN or password column,
by mistake) gave each row a "tenant id" that is no source name, and the message quoting it
showed up to 40 characters of the secret in ``status``, ``relay`` and the logs. It now names
the row and the column, says what is expected there, and shows no value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from config import load_settings
from outbox.db import create_engine
from outbox.tenant_registry import TenantRegistry
from tests.cli_helpers import run_cli, write_config

CONNINFO = "host=db1 dbname=acme user=pos password=acme-s3cret"
PASSWORD = "Tr0ub4dor&3 horse-s3cret"


def _registry(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE tenants (tenant_id VARCHAR(100), conninfo VARCHAR(200), "
                "pass_word VARCHAR(100))"
            )
            conn.exec_driver_sql(f"INSERT INTO tenants VALUES ('acme', '{CONNINFO}', '{PASSWORD}')")
    finally:
        engine.dispose()


def _expected(column: str) -> str:
    return (
        f"tenant registry 'pos', row 1: the first column ({column!r}) is no tenant id (not "
        "shown: a password or DSN selected first would be): expected a source name (letters, "
        "digits, '.', '_', '-'; at most 100), then the DSN"
    )


@pytest.mark.parametrize("engine_name", ["postgresql", "sqlite"])
@pytest.mark.parametrize(
    ("query", "column"),
    [
        ("SELECT conninfo, tenant_id FROM tenants", "conninfo"),
        ("SELECT pass_word, conninfo FROM tenants", "pass_word"),
    ],
    ids=["conninfo-first", "password-first"],
)
def test_a_secret_in_the_first_column_is_never_shown(
    engine_name: str,
    query: str,
    column: str,
    tmp_path: Path,
    database_for: Callable[[str], str],
    sqlite_database: Callable[[], str],
) -> None:
    registry_url = database_for(engine_name)
    _registry(registry_url)
    settings = load_settings(None, tenants={"pos": {"url": registry_url, "query": query}})
    registry = TenantRegistry("pos", settings.tenants["pos"])
    try:
        members = registry.read()
    finally:
        registry.close()
    config = write_config(
        tmp_path / "pos.toml",
        {
            "store": {"url": sqlite_database()},
            "tenants": {"pos": {"url": registry_url, "query": query}},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    status = run_cli(["status", "--config", str(config)])
    relayed = run_cli(["relay", "--once", "--config", str(config)])

    assert [str(p) for p in members.problems] == [_expected(column)]
    assert members.sources == {}
    assert _expected(column) in " ".join(status.output.split()), status.output
    assert _expected(column) in " ".join(relayed.output.split()), relayed.output
    for output in (status.output, relayed.output):
        assert "s3cret" not in output and "Tr0ub4dor" not in output and "host=db1" not in output
