"""Every append path of the event log reports the ``(event_type, key_hash)`` of each event it
appended, and of those only: not of a duplicate, a parked row or a row the log refused (the
relay's publisher wakes lanes by them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from outbox.envelope import aggregate_hash
from outbox.log import SMALL_APPEND, EventLog
from outbox.log_refusals import append_one_by_one
from outbox.rows import LogRecord, MalformedRow
from tests.outbox_helpers import migrate_store

TYPES = ("Deposited", "Withdrawn", "Audited")


def _records(count: int, prefix: str, payload: str = "{}") -> list[LogRecord]:
    return [
        LogRecord(
            source_position=None,
            event_id=f"{prefix}-{i}",
            tenant=None,
            aggregate_type="account",
            aggregate_id=f"a{i % 5}",
            key_hash=aggregate_hash("account", f"a{i % 5}"),
            event_type=TYPES[i % 3],
            payload=payload,
            headers=None,
            occurred_at=None,
        )
        for i in range(count)
    ]


def _pairs(records: list[LogRecord]) -> frozenset[tuple[str, int]]:
    return frozenset((r.event_type, r.key_hash) for r in records)


def _malformed(event_id: str) -> MalformedRow:
    return MalformedRow(None, event_id, "no type", {"id": event_id}, "account", "parked-one")


@pytest.fixture
def log(store_url: str) -> EventLog:
    migrate_store(store_url)
    return EventLog(store_url)


def test_each_append_path_reports_the_types_and_aggregates_it_appended(log: EventLog) -> None:
    try:
        first = _records(4, "first")  # a new source: COPY on PostgreSQL
        result = log.append("bank", first)
        assert result.type_hashes == _pairs(first) and len(result.type_hashes) == 4
        assert result.key_hashes == {r.key_hash for r in first}

        few = _records(2, "few")  # one statement on PostgreSQL
        assert log.append("bank", few).type_hashes == _pairs(few)

        many = _records(SMALL_APPEND + 20, "many")  # COPY
        assert log.append("bank", many).type_hashes == _pairs(many)

        # Two already logged, a malformed row: the checked path, the new ones only.
        fresh = [r for r in _records(9, "fresh") if r.event_type == "Audited"]
        result = log.append("bank", [*few, *fresh], [_malformed("bad-1")])
        assert (result.appended, result.duplicates, result.parked) == (len(fresh), 2, 1)
        assert result.type_hashes == _pairs(fresh)

        result = log.append("bank", [], [_malformed("bad-2")])  # parked only
        assert (result.appended, result.parked, result.type_hashes) == (0, 1, frozenset())
        result = log.append("bank", few)  # duplicates only
        assert (result.appended, result.duplicates, result.type_hashes) == (0, 2, frozenset())
    finally:
        log.close()


def test_rows_the_log_refuses_are_not_reported(pg_database: Callable[[], str]) -> None:
    url = pg_database()
    migrate_store(url)
    log = EventLog(url)
    try:
        good = _records(3, "good")
        [refused] = _records(1, "refused", payload="{not json")
        refused = replace(refused, event_type="Refused")
        result = append_one_by_one(log, "bank", [good[0], refused, *good[1:]], [], None)
        assert (result.appended, result.parked) == (3, 1)
        assert result.type_hashes == _pairs(good)
    finally:
        log.close()
