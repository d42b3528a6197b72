"""A source's position column must be unique: the relay acknowledges (deletes or marks) the
rows it claimed by position, so a non-unique one (``created_at``) would acknowledge rows
sharing a claimed row's value that were never claimed: lost events. Such a source is
refused, naming the column, and nothing is deleted; it is the configuration's to fix (exit
2), not an unreachable source."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from tests.cli_helpers import run_cli, write_config
from tests.conftest import ENGINES
from tests.tenant_fixtures import pending_rows

_UNIQUE = {
    "none": "",
    "primary key": " PRIMARY KEY",
    "unique": " UNIQUE",
}


def _outbox(url: str, key: str, index: bool = False) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE TABLE outbox (created_at BIGINT NOT NULL{_UNIQUE[key]}, "
                "id VARCHAR(36) NOT NULL, aggregatetype VARCHAR(50) NOT NULL, "
                "aggregateid VARCHAR(50) NOT NULL, type VARCHAR(50) NOT NULL, payload TEXT)"
            )
            if index:
                conn.exec_driver_sql("CREATE UNIQUE INDEX outbox_created ON outbox (created_at)")
            for n, created in enumerate((1, 2, 3) if key != "none" or index else (1, 1, 2)):
                conn.exec_driver_sql(
                    "INSERT INTO outbox (created_at, id, aggregatetype, aggregateid, type, "
                    f"payload) VALUES ({created}, 'e{n}', 'order', 'o{n}', 'Placed', '{{}}')"
                )
    finally:
        engine.dispose()


def _config(tmp_path: Path, store: str, url: str) -> Path:
    config = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": store},
            "sources": {
                "svc": {"url": url, "batch_size": 1, "columns": {"position": "created_at"}}
            },
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    return config


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_non_unique_position_column_is_refused_and_nothing_deleted(
    engine_name: str,
    tmp_path: Path,
    database_for: Callable[[str], str],
    sqlite_database: Callable[[], str],
) -> None:
    url = database_for(engine_name)
    _outbox(url, "none")
    config = _config(tmp_path, sqlite_database(), url)

    relayed = run_cli(["relay", "--once", "--config", str(config)])
    status = run_cli(["status", "--config", str(config)])

    expected = (
        "position column 'created_at' of table 'outbox' (source 'svc') is not unique: rows "
        "sharing a value would be acknowledged together, some never relayed"
    )
    for result in (relayed, status):
        assert result.exit_code == 2, result.output
        assert expected in " ".join(result.stderr.split()), result.stderr
    assert "svc: relayed 0," in relayed.stdout
    assert pending_rows(url) == 3


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize(
    ("key", "index"), [("primary key", False), ("unique", False), ("none", True)]
)
def test_a_unique_position_column_is_relayed(
    engine_name: str,
    key: str,
    index: bool,
    tmp_path: Path,
    database_for: Callable[[str], str],
    sqlite_database: Callable[[], str],
) -> None:
    url = database_for(engine_name)
    _outbox(url, key, index)
    config = _config(tmp_path, sqlite_database(), url)

    relayed = run_cli(["relay", "--once", "--config", str(config)])

    assert relayed.exit_code == 0, relayed.output
    assert "svc: relayed 3" in relayed.stdout
    assert pending_rows(url) == 0


def test_a_partial_unique_index_is_not_enough(
    tmp_path: Path, pg_database: Callable[[], str], sqlite_database: Callable[[], str]
) -> None:
    url = pg_database()
    _outbox(url, "none")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("CREATE UNIQUE INDEX some_created ON outbox (created_at) WHERE id = 'e0'")
            )
    finally:
        engine.dispose()
    config = _config(tmp_path, sqlite_database(), url)

    relayed = run_cli(["relay", "--once", "--config", str(config)])

    assert relayed.exit_code == 2, relayed.output
    assert "is not unique" in relayed.stderr
    assert pending_rows(url) == 3
