"""Helpers of the binary id tests: a MariaDB source database, the DDL of an outbox whose id
columns are of a type the test picks, and outbox rows written one transaction each."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.db import create_engine

MYSQL_OUTBOX = (
    "CREATE TABLE outbox ("
    " seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " id {id_type} NOT NULL,"
    " aggregatetype VARCHAR(255) NOT NULL,"
    " aggregateid {aggregate_type} NOT NULL,"
    " type VARCHAR(255) NOT NULL,"
    " payload JSON NOT NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
)
OUTBOX = sa.table(
    "outbox", *[sa.column(c) for c in ("id", "aggregatetype", "aggregateid", "type", "payload")]
)


@pytest.fixture
def mysql_source_db(mysql_database: Callable[[], str]) -> Iterator[tuple[str, sa.Engine]]:
    """A fresh MariaDB database for a source: its DSN and an engine on it."""
    url = mysql_database()
    engine = create_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()


def run_ddl(engine: sa.Engine, ddl: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(ddl)


def insert_outbox_rows(engine: sa.Engine, rows: list[tuple[Any, ...]]) -> None:
    """``(event id, aggregate type, aggregate id, event type, payload)`` rows, one
    transaction each, in order."""
    for event_id, aggregate_type, aggregate_id, event_type, payload in rows:
        values = {
            "id": event_id,
            "aggregatetype": aggregate_type,
            "aggregateid": aggregate_id,
            "type": event_type,
            "payload": json.dumps(payload),
        }
        with engine.begin() as conn:
            conn.execute(sa.insert(OUTBOX).values(values))
