"""A MongoDB read store that cannot be reached exits 3 ("unreachable") from every command,
as a PostgreSQL one does (tests/test_cli.py), in one line that names the driver's error and
not the password. ``parked``, ``replay`` and ``run`` exited 1 ("failed") before: only
SQLAlchemy's connection errors were taken for an unreachable store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli, unreachable_docs_config

SECRET = "S3cret-Mongo-0815"


@pytest.fixture
def config(tmp_path: Path, sqlite_database: Callable[[], str]) -> Path:
    """The chat reference projection in a MongoDB store on a closed port (the other
    projections' store, SQLite, migrated)."""
    return unreachable_docs_config(tmp_path / "readmodel.toml", sqlite_database, SECRET)


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["health"],
        ["parked", "list"],
        ["parked", "retry", "e1"],
        ["replay", "conversation_inbox", "--dry-run"],
        ["replay", "conversation_inbox", "--yes"],
        ["run", "--until-caught-up"],
    ],
)
def test_an_unreachable_mongodb_store_exits_3(command: list[str], config: Path) -> None:
    result = run_cli([*command, "--config", str(config)])

    assert result.exit_code == 3, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert "ServerSelectionTimeoutError" in lines[0] and "Connection refused" in lines[0]
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr
