"""Helpers of the binary id tests: a MariaDB source database, the DDL of an outbox whose id
columns are of a type the test picks, and outbox rows written one transaction each."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from outbox.envelope import aggregate_hash
from outbox.migrate import upgrade
from outbox.relay import Relay
from outbox.rows import LogRecord
from outbox.schema import event_log
from tests.cli_helpers import write_config

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


USERS = [uuid.uuid4() for _ in range(2)]


def rule_config(tmp_path: Path, name: str, store: str, source: dict[str, Any]) -> Path:
    return write_config(
        tmp_path / name,
        {"store": {"url": store}, "sources": {"svc": source}, "broker": {"url": "memory://"}},
    )


def write_binary_events(engine: sa.Engine, count: int) -> None:
    insert_outbox_rows(
        engine,
        [
            (uuid.uuid4().bytes, "user", USERS[n % 2].bytes, "UserEmailChanged", {"n": n})
            for n in range(count)
        ],
    )


def outbox_row_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one())


def recorded_rules_by_sql(store: str) -> dict[str, str | None]:
    """``rm_log_heads.binary_ids`` per source, read with SQL."""
    engine = create_engine(store)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT source, binary_ids FROM rm_log_heads").all()
    finally:
        engine.dispose()
    return {source: rule for source, rule in rows}


def drain_svc(config: Path) -> tuple[Any, list[Any]]:
    relay = Relay(load_settings(config))
    try:
        return relay.drain()["svc"], relay.log.read("svc")
    finally:
        relay.close()


@pytest.fixture
def binary_outbox(mysql_source_db: tuple[str, sa.Engine]) -> tuple[str, sa.Engine]:
    url, engine = mysql_source_db
    run_ddl(engine, MYSQL_OUTBOX.format(id_type="BINARY(16)", aggregate_type="BINARY(16)"))
    return url, engine


def log_records(count: int, prefix: str) -> list[LogRecord]:
    return [
        LogRecord(
            source_position=n,
            event_id=f"{prefix}-{n}",
            tenant=None,
            aggregate_type="user",
            aggregate_id=f"u{n % 3}",
            key_hash=aggregate_hash("user", f"u{n % 3}"),
            event_type="UserRegistered",
            payload=f'{{"n": {n}}}',
            headers=None,
            occurred_at=None,
        )
        for n in range(count)
    ]


def log_at_0002(store: str, *, events: bool) -> None:
    """A read store at revision 0002, as an older readmodel left it; with ``events``, one
    event of source ``svc`` relayed under ``text`` (its ids 16 bytes of text, as a
    BINARY(16) column read as UTF-8 gave them)."""
    engine = create_engine(store)
    try:
        upgrade(engine, "0002")
        if not events:
            return
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO rm_log_heads (source, head) VALUES ('svc', 1)")
            conn.execute(
                event_log.insert().values(
                    source="svc",
                    position=1,
                    event_id="evt-000000000001",
                    aggregate_type="user",
                    aggregate_id="user-00000000042",
                    key_hash=aggregate_hash("user", "user-00000000042"),
                    event_type="UserRegistered",
                    payload={"n": 0},
                )
            )
    finally:
        engine.dispose()
