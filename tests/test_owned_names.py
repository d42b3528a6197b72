"""Two projections of one store may not declare the same table (schema and name, as the
store resolves them: tests/test_store_identifiers.py) or the same collection: both wrote
one set of rows, each checkpointed apart, and a replay of one rebuilt, swapped away or
dropped the other's data. The set is refused when it
is loaded (exit 2), naming both projections and the table; the same names in another store
are no clash."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import migrate_store

FIXTURES = "tests.owned_name_fixtures"


def _status(tmp_path: Path, store: str, projections: list[str], **more: Any) -> Any:
    migrate_store(store)
    config = write_config(
        tmp_path / "rm.toml",
        {"projections": [f"{FIXTURES}:{p}" for p in projections], "store": {"url": store}, **more},
    )
    return run_cli(["status", "--json", "--config", str(config)])


def _message(result: Any) -> str:
    return " ".join(result.stderr.split())


def test_two_projections_declaring_one_table_are_refused(store_url: str, tmp_path: Path) -> None:
    result = _status(tmp_path, store_url, ["Sums", "Copies"])

    assert result.exit_code == 2, result.output
    message = _message(result)
    assert "projections 'owned_sums' and 'owned_copies' both declare table owned_ledger" in message
    assert "in store 'default'" in message
    assert result.stdout == ""


def test_one_table_spelled_in_another_case_is_refused_on_sqlite(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """SQLite matches names without case; PostgreSQL keeps the case of a name SQLAlchemy
    quotes (``OWNED_LEDGER``): tests/test_store_identifiers.py."""
    result = _status(tmp_path, sqlite_database(), ["Sums", "Shouted"])

    assert result.exit_code == 2, result.output
    assert (
        "projections 'owned_sums' and 'owned_shouted' both declare table OWNED_LEDGER "
        "(spelled owned_ledger by the first)"
    ) in _message(result)


def test_one_table_name_in_two_stores_is_no_clash(
    store_url: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    archive = sqlite_database()
    migrate_store(archive)
    result = _status(
        tmp_path, store_url, ["Sums", "Elsewhere"], stores={"archive": {"url": archive}}
    )

    assert result.exit_code == 0, result.output
    assert "owned_sums" in result.stdout and "owned_elsewhere" in result.stdout


def test_two_projections_declaring_one_collection_are_refused(
    sqlite_database: Callable[[], str], mongo_database: Callable[[], str], tmp_path: Path
) -> None:
    result = _status(
        tmp_path,
        sqlite_database(),
        ["Inbox", "InboxCopy"],
        stores={"docs": {"url": mongo_database()}},
    )

    assert result.exit_code == 2, result.output
    message = _message(result)
    assert (
        "projections 'owned_inbox' and 'owned_inbox_copy' both declare collection "
        "'owned_inbox' in store 'docs'"
    ) in message


def test_one_collection_name_in_two_stores_is_no_clash(
    sqlite_database: Callable[[], str], mongo_database: Callable[[], str], tmp_path: Path
) -> None:
    result = _status(
        tmp_path,
        sqlite_database(),
        ["Inbox", "InboxArchive"],
        stores={"docs": {"url": mongo_database()}, "archive_docs": {"url": mongo_database()}},
    )

    assert result.exit_code == 0, result.output
    assert "owned_inbox_archive" in result.stdout
