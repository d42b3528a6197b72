"""The event log's two PostgreSQL append paths (one statement for a few records, COPY for
many) store the same events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

from outbox.envelope import aggregate_hash
from outbox.log import SMALL_APPEND, EventLog
from outbox.rows import LogRecord
from tests.outbox_helpers import migrate_store


def _records(count: int, prefix: str) -> list[LogRecord]:
    moments = [
        None,
        datetime(2026, 11, 26, 3, 21, 53, 123456, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    ]
    return [
        LogRecord(
            source_position=i,
            event_id=f"{prefix}-{i}",
            tenant=None if i % 2 else f"t{i % 3}",
            aggregate_type="order",
            aggregate_id=f"o{i % 7}",
            key_hash=aggregate_hash("order", f"o{i % 7}"),
            event_type="OrderPlaced",
            payload=f'{{"n": {i}, "text": "caf\\u00e9 \\"quoted\\"", "nested": {{"a": [1, 2]}}}}',
            headers=None if i % 3 else '{"trace": "abc"}',
            occurred_at=moments[i % 3],
        )
        for i in range(count)
    ]


def _stored(log: EventLog, source: str) -> list[tuple[object, ...]]:
    return [
        (
            e.position,
            e.event_id.split("-", 1)[1],
            e.tenant,
            e.aggregate_id,
            e.payload,
            e.headers,
            e.occurred_at,
        )
        for e in log.read(source)
    ]


def test_small_and_copy_appends_store_the_same_events(pg_database: Callable[[], str]) -> None:
    url = pg_database()
    migrate_store(url)
    log = EventLog(url)
    try:
        small = _records(SMALL_APPEND, "small")
        large = _records(SMALL_APPEND, "large")
        log.append("small", small[:1])  # creates the head row (the COPY path)
        assert log.append("small", small[1:]).head == SMALL_APPEND  # one statement
        log.append("large", large[:1])
        extra = _records(SMALL_APPEND + 1, "extra")[SMALL_APPEND:]
        assert log.append("large", large[1:] + extra).head == SMALL_APPEND + 1  # COPY
        assert _stored(log, "small") == _stored(log, "large")[:SMALL_APPEND]
        first = log.read("small", limit=3)
        assert first[1].payload == {"n": 1, "text": 'café "quoted"', "nested": {"a": [1, 2]}}
        assert first[1].occurred_at == datetime(2026, 11, 26, 3, 21, 53, 123456, tzinfo=UTC)
    finally:
        log.close()


def test_a_duplicate_in_a_small_append_is_counted_not_stored_twice(
    pg_database: Callable[[], str],
) -> None:
    url = pg_database()
    migrate_store(url)
    log = EventLog(url)
    try:
        records = _records(5, "dup")
        log.append("svc", records[:3])
        result = log.append("svc", records)  # three already logged: the checked path
        assert (result.appended, result.duplicates, result.head) == (2, 3, 5)
        assert [e.event_id for e in log.read("svc")] == [r.event_id for r in records]
    finally:
        log.close()
