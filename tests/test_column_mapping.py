"""Outbox tables as ORMs create them: column names are mapped per source in the settings."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from config import ColumnMap, ConfigError, Settings
from outbox.db import create_engine
from outbox.envelope import Envelope
from outbox.errors import SourceError
from outbox.log import EventLog
from outbox.relay import Relay, RelayTotals, SourceRelay
from outbox.sources import open_source
from tests.conftest import ENGINES
from tests.outbox_helpers import init_outbox, insert_events

T0 = datetime(2024, 5, 17, 9, 30, 0, 123000, tzinfo=UTC)


@pytest.fixture
def engines() -> Iterator[list[sa.Engine]]:
    """Engines a test creates; all are disposed after it."""
    created: list[sa.Engine] = []
    yield created
    for engine in created:
        engine.dispose()


def _engine(engines: list[sa.Engine], url: str) -> sa.Engine:
    engine = create_engine(url)
    engines.append(engine)
    return engine


def _drain(settings: Settings) -> tuple[dict[str, RelayTotals], list[Envelope]]:
    relay = Relay(settings)
    try:
        totals = relay.drain()
        name = next(iter(settings.sources))
        return totals, relay.log.read(name)
    finally:
        relay.close()


def _count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(sql).scalar_one())


def test_prisma_style_postgres_table(
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
    engines: list[sa.Engine],
) -> None:
    source_url = pg_database()
    db = _engine(engines, source_url)
    with db.begin() as conn:
        conn.exec_driver_sql('CREATE SCHEMA "billing"')
        conn.exec_driver_sql(
            'CREATE TABLE "billing"."OutboxEvent" ('
            ' "id" TEXT PRIMARY KEY,'
            ' "aggregateType" TEXT NOT NULL,'
            ' "aggregateId" TEXT NOT NULL,'
            ' "eventType" TEXT NOT NULL,'
            ' "payload" JSONB NOT NULL,'
            ' "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,'
            ' "seq" BIGSERIAL NOT NULL UNIQUE)'
        )
        for i in range(1, 31):
            conn.exec_driver_sql(
                'INSERT INTO "billing"."OutboxEvent" '
                '("id", "aggregateType", "aggregateId", "eventType", "payload", "createdAt") '
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    f"clx{i:05d}prisma",
                    "Invoice" if i % 2 else "Payment",
                    f"inv-{i % 4}",
                    "InvoiceIssued" if i % 2 else "PaymentReceived",
                    json.dumps({"n": i, "amount": {"cents": i * 100, "currency": "EUR"}}),
                    (T0 + timedelta(seconds=i)).replace(tzinfo=None),
                ),
            )
    settings = make_settings(
        pg_database(),
        {
            "billing": {
                "url": source_url,
                "schema": "billing",
                "table": "OutboxEvent",
                "batch_size": 7,
                "columns": {
                    "position": "seq",
                    "event_id": "id",
                    "aggregate_type": "aggregateType",
                    "aggregate_id": "aggregateId",
                    "event_type": "eventType",
                    "payload": "payload",
                    "occurred_at": "createdAt",
                    "tenant": "",
                    "headers": "",
                },
            }
        },
    )

    totals, logged = _drain(settings)

    assert (totals["billing"].relayed, totals["billing"].parked, totals["billing"].errors) == (
        30,
        0,
        [],
    )
    assert [e.position for e in logged] == list(range(1, 31))
    assert [e.event_id for e in logged] == [f"clx{i:05d}prisma" for i in range(1, 31)]
    assert [e.aggregate_type for e in logged] == [
        "Invoice" if i % 2 else "Payment" for i in range(1, 31)
    ]
    assert [e.aggregate_id for e in logged] == [f"inv-{i % 4}" for i in range(1, 31)]
    assert [e.event_type for e in logged] == [
        "InvoiceIssued" if i % 2 else "PaymentReceived" for i in range(1, 31)
    ]
    assert [e.payload for e in logged] == [
        {"n": i, "amount": {"cents": i * 100, "currency": "EUR"}} for i in range(1, 31)
    ]
    assert [e.occurred_at for e in logged] == [T0 + timedelta(seconds=i) for i in range(1, 31)]
    assert all(e.source == "billing" and e.tenant is None and e.headers == {} for e in logged)
    assert _count(db, 'SELECT count(*) FROM "billing"."OutboxEvent"') == 0


def test_typeorm_style_mariadb_table(
    mysql_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
    engines: list[sa.Engine],
) -> None:
    source_url = mysql_database()
    db = _engine(engines, source_url)
    with db.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE `outbox_message` ("
            " `seq` BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
            " `id` VARCHAR(36) NOT NULL UNIQUE,"
            " `aggregateType` VARCHAR(255) NOT NULL,"
            " `aggregateId` VARCHAR(255) NOT NULL,"
            " `eventType` VARCHAR(255) NOT NULL,"
            " `payload` JSON NOT NULL,"
            " `occurredAt` DATETIME(6) NOT NULL,"
            " `tenantId` VARCHAR(64) NULL,"
            " `metadata` JSON NULL,"
            " `processedAt` DATETIME(6) NULL"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
        for i in range(1, 26):
            conn.exec_driver_sql(
                "INSERT INTO `outbox_message` (`id`, `aggregateType`, `aggregateId`, `eventType`,"
                " `payload`, `occurredAt`, `tenantId`, `metadata`)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    f"00000000-0000-4000-8000-{i:012d}",
                    "User",
                    f"user-{i % 5}",
                    "UserRegistered" if i <= 5 else "UserEmailChanged",
                    json.dumps({"n": i, "email": f"u{i}@example.com", "name": "Zoë"}),
                    (T0 + timedelta(milliseconds=i)).replace(tzinfo=None),
                    None if i % 3 == 0 else f"tenant-{i % 2}",
                    json.dumps({"correlationId": f"req-{i}", "causationId": f"cmd-{i}"}),
                ),
            )
    settings = make_settings(
        sqlite_database(),
        {
            "auth": {
                "url": source_url.replace("mysql://", "mariadb://", 1),
                "table": "outbox_message",
                "on_dispatch": "mark",
                "tenant": "default-tenant",
                "batch_size": 10,
                "columns": {
                    "aggregate_type": "aggregateType",
                    "aggregate_id": "aggregateId",
                    "event_type": "eventType",
                    "occurred_at": "occurredAt",
                    "tenant": "tenantId",
                    "headers": "metadata",
                    "dispatched_at": "processedAt",
                },
            }
        },
    )

    totals, logged = _drain(settings)

    assert (totals["auth"].relayed, totals["auth"].parked, totals["auth"].errors) == (25, 0, [])
    assert [e.position for e in logged] == list(range(1, 26))
    assert [e.event_id for e in logged] == [
        f"00000000-0000-4000-8000-{i:012d}" for i in range(1, 26)
    ]
    assert {e.aggregate_type for e in logged} == {"User"}
    assert [e.aggregate_id for e in logged] == [f"user-{i % 5}" for i in range(1, 26)]
    assert [e.event_type for e in logged][4:6] == ["UserRegistered", "UserEmailChanged"]
    assert [e.payload for e in logged] == [
        {"n": i, "email": f"u{i}@example.com", "name": "Zoë"} for i in range(1, 26)
    ]
    assert [e.occurred_at for e in logged] == [T0 + timedelta(milliseconds=i) for i in range(1, 26)]
    # A NULL tenant column falls back to the source's configured tenant.
    assert [e.tenant for e in logged] == [
        "default-tenant" if i % 3 == 0 else f"tenant-{i % 2}" for i in range(1, 26)
    ]
    assert [(e.correlation_id, e.causation_id) for e in logged] == [
        (f"req-{i}", f"cmd-{i}") for i in range(1, 26)
    ]
    assert _count(db, "SELECT count(*) FROM outbox_message WHERE processedAt IS NULL") == 0
    assert _count(db, "SELECT count(*) FROM outbox_message WHERE processedAt IS NOT NULL") == 25


@pytest.mark.parametrize("engine_name", ENGINES)
def test_table_without_optional_columns(
    engine_name: str,
    database_for: Callable[[str], str],
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
    engines: list[sa.Engine],
) -> None:
    source_url = database_for(engine_name)
    db = _engine(engines, source_url)
    serial = {
        "postgresql": "BIGSERIAL PRIMARY KEY",
        "mysql": "BIGINT AUTO_INCREMENT PRIMARY KEY",
        "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
    }[engine_name]
    with db.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE outbox (seq {serial}, aggregatetype VARCHAR(50) NOT NULL, "
            "aggregateid VARCHAR(50) NOT NULL, type VARCHAR(50) NOT NULL, payload TEXT NOT NULL)"
        )
    insert_events(db, [("cart", f"c{i % 3}", "ItemAdded", {"n": i}) for i in range(12)])
    # Default column names: id, timestamp, tenant_id and headers are simply not there.
    settings = make_settings(
        sqlite_database(), {"shop": {"url": source_url, "tenant": "t1", "batch_size": 5}}
    )

    totals, logged = _drain(settings)

    assert (totals["shop"].relayed, totals["shop"].parked, totals["shop"].errors) == (12, 0, [])
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one() == 0
    assert [e.payload for e in logged] == [{"n": i} for i in range(12)]
    assert [e.position for e in logged] == list(range(1, 13))
    # Without an event id column the id derives from the source and the outbox position.
    assert [e.event_id for e in logged] == [f"shop:{seq}" for seq in range(1, 13)]
    assert all(e.occurred_at is None and e.headers == {} and e.tenant == "t1" for e in logged)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_reserved_words_as_names_are_quoted(
    engine_name: str,
    database_for: Callable[[str], str],
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
    engines: list[sa.Engine],
) -> None:
    source_url = database_for(engine_name)
    columns = {
        "position": "order",
        "event_id": "key",
        "aggregate_type": "group",
        "aggregate_id": "user",
        "event_type": "select",
        "payload": "from",
        "occurred_at": "timestamp",
        "tenant": "tenant$id",
        "headers": "table",
        "dispatched_at": "where",
    }
    settings = make_settings(
        sqlite_database(),
        {
            "odd": {
                "url": source_url,
                "table": "Select",
                "on_dispatch": "mark",
                "retention": "0s",
                "batch_size": 4,
                "columns": columns,
            }
        },
    )
    init_outbox(settings.sources["odd"])
    db = _engine(engines, source_url)
    insert_events(
        db,
        [("group", f"g{i}", "Selected", {"n": i}) for i in range(10)],
        table="Select",
        columns=("group", "user", "select", "from"),
    )

    totals, logged = _drain(settings)

    assert (totals["odd"].relayed, totals["odd"].errors) == (10, [])
    assert [(e.aggregate_id, e.event_type, e.payload) for e in logged] == [
        (f"g{i}", "Selected", {"n": i}) for i in range(10)
    ]
    time.sleep(0.01)
    source = open_source("odd", settings.sources["odd"])
    try:
        source.purge_dispatched()
        assert source.pending().undelivered == 0
    finally:
        source.close()
    table = sa.table("Select", sa.column("order"))
    with db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 0


@pytest.mark.parametrize("engine_name", ENGINES)
def test_missing_required_column_names_column_and_key(
    engine_name: str,
    database_for: Callable[[str], str],
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
    engines: list[sa.Engine],
) -> None:
    source_url = database_for(engine_name)
    db = _engine(engines, source_url)
    with db.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, aggregatetype VARCHAR(50), "
            "aggregateid VARCHAR(50), event_type VARCHAR(50), payload TEXT)"
        )
    settings = make_settings(sqlite_database(), {"svc": {"url": source_url}})
    log = EventLog(settings.store.url)
    log.create_tables()
    source = open_source("svc", settings.sources["svc"])
    try:
        with pytest.raises(SourceError) as caught:
            SourceRelay(source, log).drain()
        message = str(caught.value)
        assert "'svc'" in message
        assert "has no column 'type'" in message
        assert "columns.event_type" in message
        with pytest.raises(SourceError, match="columns.event_type"):
            source.pending()
    finally:
        source.close()
        log.close()

    # Through the Relay the failure is reported, not raised, and nothing is logged.
    relay = Relay(settings)
    try:
        totals = relay.drain()["svc"]
        assert totals.relayed == 0
        assert len(totals.errors) == 1 and "columns.event_type" in totals.errors[0]
        assert relay.log.head("svc") == 0
    finally:
        relay.close()


def test_mark_needs_the_dispatched_column_in_the_table(
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
    engines: list[sa.Engine],
) -> None:
    source_url = sqlite_database()
    db = _engine(engines, source_url)
    with db.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, aggregatetype TEXT, "
            "aggregateid TEXT, type TEXT, payload TEXT)"
        )
    settings = make_settings(sqlite_database(), {"svc": {"url": source_url, "on_dispatch": "mark"}})
    source = open_source("svc", settings.sources["svc"])
    try:
        with pytest.raises(SourceError, match=r"no column 'dispatched_at' \(configured as "):
            source.try_lead()
        assert not source.leading
    finally:
        source.close()


def test_missing_table_says_how_to_create_it(
    pg_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings("sqlite:///unused.db", {"orders": {"url": pg_database()}})
    source = open_source("orders", settings.sources["orders"])
    try:
        with pytest.raises(SourceError) as caught:
            source.try_lead()
    finally:
        source.close()
    assert "outbox table 'outbox' does not exist" in str(caught.value)
    assert "readmodel outbox init --source orders" in str(caught.value)


@pytest.mark.parametrize(
    "columns",
    [
        {"payload": 'payload"; DROP TABLE outbox; --'},
        {"aggregate_id": "aggregateId`) OR 1=1 -- "},
        {"position": "seq) UNION SELECT password FROM users --"},
        {"event_id": "id; DELETE FROM outbox"},
        {"dispatched_at": "dispatched at"},
        {"headers": "h'"},
        {"tenant": "1tenant"},
        {"occurred_at": "x" * 64},
    ],
)
def test_malicious_column_names_are_rejected_by_validation(
    columns: dict[str, str], make_settings: Callable[..., Settings]
) -> None:
    field = next(iter(columns))
    with pytest.raises(ConfigError) as caught:
        make_settings("sqlite:///x.db", {"svc": {"url": "sqlite:///svc.db", "columns": columns}})
    assert f"sources.svc.columns.{field}" in str(caught.value)
    assert "not a valid SQL identifier" in str(caught.value)
    with pytest.raises(ValueError, match="not a valid SQL identifier"):
        ColumnMap(**columns)


def test_malicious_table_and_schema_names_are_rejected(
    make_settings: Callable[..., Settings],
) -> None:
    for key, value in (("table", "outbox; DROP TABLE users"), ("schema", 'public"."users')):
        with pytest.raises(ConfigError, match=f"sources.svc.{key}: .*not a valid SQL identifier"):
            make_settings("sqlite:///x.db", {"svc": {"url": "sqlite:///svc.db", key: value}})


def test_configured_optional_column_that_is_missing_is_an_error(
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
    engines: list[sa.Engine],
) -> None:
    """A typo in an optional column must not silently switch event ids to positions."""
    source_url = sqlite_database()
    db = _engine(engines, source_url)
    with db.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, id TEXT, aggregatetype TEXT, "
            "aggregateid TEXT, type TEXT, payload TEXT)"
        )
    settings = make_settings(
        sqlite_database(), {"svc": {"url": source_url, "columns": {"event_id": "uuid"}}}
    )
    source = open_source("svc", settings.sources["svc"])
    try:
        with pytest.raises(SourceError, match=r"no column 'uuid' \(configured as columns.event_id"):
            source.try_lead()
    finally:
        source.close()
