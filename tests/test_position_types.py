"""The relay orders rows by their position column and acknowledges them by it: a position
column that is not an integer (TEXT, a timestamp, a UUID, a float) was accepted, and rows
were relayed in that column's order: text compares '10' before '9', a UUID in random order,
so an aggregate's events reached the log out of the order they were written in. Such a
column is refused now when the table is resolved (exit 2, naming source, table, column and
its type), as a missing column is (tests/test_source_config_exits.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from outbox.db import create_engine
from tests.cli_helpers import run_cli, run_cli_process, write_config
from tests.tenant_fixtures import pending_rows

_COMMON = "id VARCHAR(36) NOT NULL, aggregatetype VARCHAR(50) NOT NULL, aggregateid VARCHAR(50)"

CASES = [
    ("postgresql", "TEXT", ["9", "10"]),
    (
        "postgresql",
        "UUID",
        ["f0000000-0000-0000-0000-000000000000", "0f000000-0000-0000-0000-000000000000"],
    ),
    ("postgresql", "TIMESTAMP", ["2026-11-28 10:00:00", "2026-11-28 09:00:00"]),
    ("postgresql", "DOUBLE PRECISION", ["9", "10"]),
    ("mysql", "VARCHAR(20)", ["9", "10"]),
    ("mysql", "DATETIME(6)", ["2026-11-28 10:00:00", "2026-11-28 09:00:00"]),
    ("mysql", "DOUBLE", ["9", "10"]),
    ("sqlite", "TEXT", ["9", "10"]),
    ("sqlite", "REAL", ["9", "10"]),
]


def _outbox(url: str, column_type: str, positions: list[str]) -> None:
    """Two events of one aggregate, written in ``positions`` order."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE TABLE outbox (pos {column_type} PRIMARY KEY, {_COMMON}, "
                "type VARCHAR(50), payload TEXT)"
            )
            for n, position in enumerate(positions):
                conn.exec_driver_sql(
                    "INSERT INTO outbox (pos, id, aggregatetype, aggregateid, type, payload) "
                    f"VALUES ('{position}', 'e{n}', 'order', 'o1', 'Step{n}', '{{}}')"
                )
    finally:
        engine.dispose()


def _line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(("engine_name", "column_type", "positions"), CASES)
def test_a_position_column_that_is_not_an_integer_is_refused(
    engine_name: str,
    column_type: str,
    positions: list[str],
    tmp_path: Path,
    database_for: Callable[[str], str],
    sqlite_database: Callable[[], str],
) -> None:
    url = database_for(engine_name)
    _outbox(url, column_type, positions)
    source = {"url": url, "columns": {"position": "pos"}}
    config = write_config(
        tmp_path / "rm.toml", {"store": {"url": sqlite_database()}, "sources": {"svc": source}}
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    relayed = run_cli_process("relay", "--once", "--config", str(config))
    status = run_cli_process("status", "--config", str(config))

    expected = (
        f"source 'svc': position column 'pos' of outbox table 'outbox' is "
        f"{column_type.split('(')[0]}"
    )
    assert relayed.returncode == 2, relayed.stdout + relayed.stderr
    assert expected in _line(relayed.stderr), relayed.stderr
    assert "needs an integer column" in _line(relayed.stderr), relayed.stderr
    assert status.returncode == 2, status.stderr
    assert f"svc: refused: {expected}" in _line(status.stderr), status.stderr
    for result in (relayed, status):
        assert "Traceback" not in result.stderr
    assert pending_rows(url) == 2
