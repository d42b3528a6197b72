"""``readmodel query`` reads a projection's tables as they are: a subscription nothing feeds
(a typo in an ``@on``), which run, work, status and parked refuse (exit 2), is a warning on
stderr here, for the projection read, and the read is served (exit 0). Before, query loaded
the projections without the check and said nothing. With several read stores, the warning
begins ``read store NAME at LOCATION: `` (no password), as query's errors do; before, it
did not say which store the projection is in."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import migrate_store
from tests.subscription_fixtures import Split, Typo

FIXTURES = "tests.subscription_fixtures"


SECRET = "S3cret-Unfed-5521"


def _config(
    tmp_path: Path,
    store: str,
    sqlite_database: Callable[[], str],
    stores: dict[str, Any] | None = None,
) -> Path:
    """``typo_counts`` reads ``bnak``, which nothing feeds; ``split_counts`` is fed. Other
    ``stores`` (migrated) are configured beside ``[store]``."""
    migrate_store(store)
    engine = sa.create_engine(store)
    try:
        with engine.begin() as conn:
            for table in (*Typo.tables, *Split.tables):
                table.create(conn)
                conn.execute(table.insert().values(id="a1", events=3))
    finally:
        engine.dispose()
    for other in (stores or {}).values():
        migrate_store(other["url"])
    return write_config(
        tmp_path / "rm.toml",
        {
            "projections": [f"{FIXTURES}:Typo", f"{FIXTURES}:Split"],
            "store": {"url": store},
            "stores": stores or {},
            "sources": {"bank": {"url": sqlite_database()}, "payments": {"url": sqlite_database()}},
        },
    )


def _message(result: Any) -> str:
    return " ".join(result.stderr.split())


def test_a_query_of_a_projection_with_an_unfed_subscription_warns_and_reads(
    store_url: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    config = _config(tmp_path, store_url, sqlite_database)

    result = run_cli(["query", "typo_counts", "a1", "--json", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["row"] == {"id": "a1", "events": 3}
    message = _message(result)
    assert "warning: projection 'typo_counts' subscribes to source 'bnak'" in message
    assert "(did you mean 'bank'?)" in message
    assert "the query reads its tables as they are" in message


def test_with_several_stores_the_warning_names_the_projections_store(
    store_url: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """``typo_counts`` is in ``[store]`` (its password :data:`SECRET` on PostgreSQL, which
    trusts local users), beside a store ``reports``."""
    user, at, rest = store_url.partition("@")
    store = f"{user}:{SECRET}@{rest}" if at else store_url
    location = f"postgresql://{rest.partition('?')[0]}" if at else store_url
    reports = {"reports": {"url": sqlite_database()}}
    config = _config(tmp_path, store, sqlite_database, reports)

    result = run_cli(["query", "typo_counts", "a1", "--json", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["row"] == {"id": "a1", "events": 3}
    assert _message(result).startswith(
        f"warning: read store default at {location}: projection 'typo_counts' subscribes to "
        "source 'bnak'"
    ), result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_a_query_of_a_fed_projection_does_not_warn(
    store_url: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    config = _config(tmp_path, store_url, sqlite_database)

    result = run_cli(["query", "split_counts", "a1", "--json", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["row"] == {"id": "a1", "events": 3}
    assert "warning" not in result.stderr


def test_the_other_commands_refuse_the_same_configuration(
    store_url: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    config = _config(tmp_path, store_url, sqlite_database)

    result = run_cli(["status", "--config", str(config)])

    assert result.exit_code == 2, result.output
    assert "projection 'typo_counts' subscribes to source 'bnak'" in _message(result)
