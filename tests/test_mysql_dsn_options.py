"""A MySQL/MariaDB source DSN whose query options PyMySQL would refuse (``?charset=bogus``,
an unknown option, ``?connect_timeout=ten``) is a configuration error: ``relay --once`` and
``status`` exit 2 naming the source's key and the option, never the password. The relay
printed ``source 'auth' cannot be opened or used: AttributeError: 'NoneType' object has no
attribute 'encoding'`` and exited 3, as for a server it cannot reach."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from config import SourceSettings
from outbox.db import create_engine
from tests.cli_helpers import run_cli, with_password, write_config
from tests.outbox_helpers import init_outbox, insert_events, migrate_store

PASSWORD = "s3cr3t-pw"


def _config(tmp_path: Path, store: str, source_url: str) -> Path:
    config = write_config(
        tmp_path / "rm.toml", {"store": {"url": store}, "sources": {"auth": {"url": source_url}}}
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    return config


def _with_query(url: str, query: str) -> str:
    return f"{with_password(url, PASSWORD)}?{query}"


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("charset=bogus", "charset='bogus'"),
        ("charset=utf8mb4&frobnicate=1", "'frobnicate'"),
        ("connect_timeout=ten", "connect_timeout"),
    ],
    ids=["unknown-charset", "unknown-option", "not-a-number"],
)
@pytest.mark.parametrize("command", [["relay", "--once"], ["status"]], ids=["relay", "status"])
def test_a_query_option_the_driver_refuses_exits_2_naming_source_and_option(
    query: str,
    named: str,
    command: list[str],
    tmp_path: Path,
    mysql_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> None:
    store = sqlite_database()
    migrate_store(store)
    config = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": store},
            "sources": {"auth": {"url": _with_query(mysql_database(), query)}},
        },
    )

    result = run_cli([*command, "--config", str(config)])

    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert "sources.auth.url" in message
    assert named in message
    assert "AttributeError" not in message and "TypeError" not in message
    assert PASSWORD not in result.output
    assert result.stdout == ""


def test_a_known_charset_relays(
    tmp_path: Path, mysql_database: Callable[[], str], sqlite_database: Callable[[], str]
) -> None:
    url = f"{mysql_database()}?charset=utf8mb4"
    init_outbox(SourceSettings(url=url), "auth")
    engine = create_engine(url)
    try:
        insert_events(engine, [("user", "u1", "UserRegistered", {"email": "ada@example.com"})])
    finally:
        engine.dispose()
    config = _config(tmp_path, sqlite_database(), url)

    result = run_cli(["relay", "--once", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert "auth: relayed 1" in result.stdout
