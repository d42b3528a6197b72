"""`readmodel parked list` and `parked show` only read: they create no read-model table in
a SQL store and no collection in a MongoDB one (they created every projection's tables and
collections, as a worker starting does)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pymongo
import sqlalchemy as sa

from tests.cli_helpers import run_cli, write_config

READ_COMMANDS = (["parked", "list"], ["parked", "list", "--json"], ["parked", "show", "e1"])


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_parked_list_and_show_create_no_table(
    tmp_path: Path, pg_database: Callable[[], str], sqlite_database: Callable[[], str]
) -> None:
    store = pg_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store},
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    before = _tables(store)
    assert "account_totals" not in before

    results = [run_cli([*command, "--config", str(config)]) for command in READ_COMMANDS]

    assert [r.exit_code for r in results[:2]] == [0, 0], results[0].output + results[1].output
    assert results[2].exit_code != 0 and "e1" in results[2].stderr, results[2].stderr
    assert _tables(store) == before


def test_parked_list_and_show_create_no_collection(
    tmp_path: Path, sqlite_database: Callable[[], str], mongo_database: Callable[[], str]
) -> None:
    url = mongo_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["projections.reference.conversation_inbox:ConversationInbox"],
            "store": {"url": sqlite_database()},
            "stores": {"docs": {"url": url}},
            "sources": {"auth": {"url": sqlite_database()}, "chat": {"url": sqlite_database()}},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    client: pymongo.MongoClient = pymongo.MongoClient(url)
    try:
        database = client.get_default_database()
        before = set(database.list_collection_names())

        results = [run_cli([*command, "--config", str(config)]) for command in READ_COMMANDS]

        assert [r.exit_code for r in results[:2]] == [0, 0], results[0].output
        assert results[2].exit_code != 0 and "e1" in results[2].stderr, results[2].stderr
        assert set(database.list_collection_names()) == before
    finally:
        client.close()
