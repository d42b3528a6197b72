"""Numbers a double cannot hold: integers past 64 bits are compared exactly by the log's
duplicate check, an integer past a double's range is relayed exactly, and a number with a
fraction or an exponent past that range (or an integer past Python's digit limit) is
parked, saying why."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from config import Settings
from outbox.db import create_engine
from outbox.envelope import aggregate_hash
from outbox.log import EventLog
from outbox.relay import Relay
from outbox.rows import LogRecord
from tests.outbox_helpers import migrate_store

BIG = 2**70 + 1  # 1180591620717411303425: as a double, 1180591620717411303424
TWIN = 2**70  # the same double


def _record(event_id: str, payload: str, position: int = 1) -> LogRecord:
    return LogRecord(
        source_position=position,
        event_id=event_id,
        tenant=None,
        aggregate_type="account",
        aggregate_id="a1",
        key_hash=aggregate_hash("account", "a1"),
        event_type="Credited",
        payload=payload,
        headers=None,
        occurred_at=None,
    )


@pytest.fixture(params=["postgresql", "sqlite"])
def log(
    request: pytest.FixtureRequest,
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> EventLog:
    url = pg_database() if request.param == "postgresql" else sqlite_database()
    migrate_store(url)
    return EventLog(url)


def _parked(log: EventLog) -> list[tuple[str, object]]:
    with log.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT reason, raw FROM rm_parked ORDER BY id")).all()
    return [(reason, json.loads(raw) if isinstance(raw, str) else raw) for reason, raw in rows]


def test_a_reused_id_whose_payload_differs_past_64_bits_is_parked(log: EventLog) -> None:
    try:
        log.append("src", [_record("e1", f'{{"amount": {BIG}}}')])

        result = log.append("src", [_record("e1", f'{{"amount": {TWIN}}}', position=2)])

        assert (result.appended, result.duplicates, result.parked) == (0, 0, 1)
        [(reason, raw)] = _parked(log)
        assert "event id 'e1' is already in the log" in reason
        assert raw["payload"] == {"amount": TWIN}  # type: ignore[index]
        assert log.head("src") == 1
    finally:
        log.close()


def test_a_redelivered_payload_with_big_numbers_is_a_duplicate(log: EventLog) -> None:
    """The same value written another way (JSONB prints 1e23 as 24 digits) is the same
    event; ``true`` is not ``1``."""
    payload = f'{{"amount": {BIG}, "exp": 1e23, "ratio": 0.10000000000000001}}'
    try:
        log.append("src", [_record("e1", payload), _record("e2", '{"flag": true}')])

        again = log.append(
            "src",
            [
                _record("e1", payload.replace(" ", ""), position=1),
                _record("e2", '{"flag": 1}', position=2),
            ],
        )

        assert (again.appended, again.duplicates, again.parked) == (0, 1, 1)
        [(reason, _)] = _parked(log)
        assert "event id 'e2' is already in the log" in reason
        assert log.read("src")[0].event_id == "e1"
    finally:
        log.close()


def _relay(
    url: str, make_settings: Callable[..., Settings], number: str
) -> tuple[list[Any], list[dict[str, Any]], list[str]]:
    """Relay three rows of a jsonb outbox, the second holding ``number``: the totals'
    ``(errors, relayed, parked)``, the logged payloads (read back), the parked reasons."""
    source = create_engine(url)
    try:
        with source.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, aggregatetype TEXT, "
                "aggregateid TEXT, type TEXT, payload JSONB)"
            )
            for payload in ('{"n": 1}', f'{{"n": 2, "huge": {number}}}', '{"n": 3}'):
                conn.exec_driver_sql(
                    "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                    "VALUES ('account', 'a1', 'Credited', %s)",
                    (payload,),
                )
    finally:
        source.dispose()
    relay = Relay(make_settings(url, {"svc": {"url": url}}))
    try:
        totals = relay.drain()["svc"]
        logged = [e.payload for e in relay.log.read("svc")]
        with relay.log.engine.connect() as conn:
            reasons = conn.execute(sa.text("SELECT reason FROM rm_parked")).scalars().all()
    finally:
        relay.close()
    return [totals.errors, totals.relayed, totals.parked], logged, list(reasons)


@pytest.mark.parametrize("number", ["2" + "0" * 350 + ".125", "-" + "9" * 400 + ".5"])
def test_a_number_beyond_a_double_is_parked_saying_why(
    number: str,
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """PostgreSQL's jsonb holds 2e350 + 0.125 (numeric), readmodel's readers (doubles, for a
    number with a fraction or an exponent) would not: the row is parked, and the reason says
    the value would be lost, not that it is not JSON."""
    totals, logged, [reason] = _relay(pg_database(), make_settings, number)

    assert totals == [[], 2, 1]
    assert [payload["n"] for payload in logged] == [1, 3]
    assert "not valid JSON" not in reason
    assert "payload (column 'payload') holds the number" in reason
    assert "beyond the range of a double" in reason
    assert "with a fraction or an exponent" in reason
    assert "would lose its value" in reason


def test_an_integer_beyond_a_double_is_relayed_and_read_back_exactly(
    pg_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    """Integers are read exactly, whatever their size (it was parked: "readmodel reads JSON
    numbers as doubles"); jsonb keeps 1e400 as the integer it is, and prints its digits."""
    totals, logged, reasons = _relay(pg_database(), make_settings, "-" + "9" * 400)
    as_exponent = _relay(pg_database(), make_settings, "1E+400")

    assert (totals, reasons) == ([[], 3, 0], [])
    assert logged[1] == {"n": 2, "huge": -int("9" * 400)}
    assert as_exponent[0] == [[], 3, 0]
    assert as_exponent[1][1] == {"n": 2, "huge": 10**400}


def test_an_integer_past_pythons_digit_limit_is_parked_naming_its_size(
    pg_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    limit = sys.get_int_max_str_digits()
    totals, logged, [reason] = _relay(pg_database(), make_settings, "9" * (limit + 1))

    assert totals == [[], 2, 1]
    assert [payload["n"] for payload in logged] == [1, 3]
    assert f"payload (column 'payload') holds an integer of {limit + 1} digits" in reason
    assert f"at most {limit} digits" in reason


DEEP = 1000  # orjson (the row check) reads up to 1024 levels; the json module recurses


def _deep(inner: str, key: str = '"x"') -> str:
    # "5e2c" looks like an exponent: the exact (json module) comparison is taken
    return f'{{"id": "0b9a5e2c", {key}: {"[" * DEEP}{inner}{"]" * DEEP}}}'


def test_a_redelivered_deeply_nested_payload_is_a_duplicate(log: EventLog) -> None:
    try:
        log.append("src", [_record("e1", _deep(f"{BIG}"))])

        # Spaced differently (PostgreSQL's jsonb text is not the outbox's): compared parsed.
        again = log.append("src", [_record("e1", _deep(f"{BIG}", key=' "x"'), position=2)])

        assert (again.appended, again.duplicates, again.parked) == (0, 1, 0), _parked(log)
    finally:
        log.close()


def test_a_reused_id_with_another_deeply_nested_payload_is_parked(log: EventLog) -> None:
    try:
        log.append("src", [_record("e1", _deep(f"{BIG}"))])

        reused = log.append("src", [_record("e1", _deep(f"{TWIN}"), position=2)])

        assert (reused.appended, reused.duplicates, reused.parked) == (0, 0, 1)
        with log.engine.connect() as conn:
            reason = conn.execute(sa.text("SELECT reason FROM rm_parked")).scalar_one()
        assert "is already in the log" in reason
    finally:
        log.close()
