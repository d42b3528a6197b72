"""A malformed outbox row delivered again is not parked again: the entry still parked for it
stands for it, as the log's event id stands for a good row delivered again."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from config import Settings
from outbox.db import create_engine
from outbox.log import EventLog
from outbox.parking import ParkedEvents
from outbox.relay import Relay, SourceRelay
from outbox.sources import open_source
from tests.conftest import ENGINES
from tests.outbox_helpers import append_unacknowledged, init_outbox

_ROWS = (  # (aggregate id, payload): a good row, then two malformed ones, then a good one
    ("o1", '{"n": 1}'),
    ("o1", "[1, 2]"),
    ("", '{"n": 3}'),
    ("o2", '{"n": 4}'),
)
_REASONS = ["is a JSON array, expected an object", "missing aggregate id"]


def _parked_reasons(log: EventLog, source: str) -> list[str]:
    return [p.reason for p in ParkedEvents(log.engine).list(source=source)]


def _only_once(reasons: list[str]) -> bool:
    return len(reasons) == len(_REASONS) and all(
        part in reason for part, reason in zip(_REASONS, reasons, strict=True)
    )


def test_rows_whose_acknowledgement_keeps_failing_are_parked_once(
    pg_database: Callable[[], str], store_url: str, make_settings: Callable[..., Settings]
) -> None:
    """The outbox refuses the relay's DELETE (a trigger; a privilege revoked): the relay
    retries, its batch comes back each time. The good rows were recognised by event id, but
    each malformed row was parked again at every retry, every few seconds, for ever."""
    url = pg_database()
    db = create_engine(url)
    with db.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, aggregatetype TEXT, "
            "aggregateid TEXT, type TEXT, payload TEXT)"
        )
        for aggregate_id, payload in _ROWS:
            conn.exec_driver_sql(
                "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                "VALUES ('order', %s, 'OrderPlaced', %s)",
                (aggregate_id, payload),
            )
        conn.exec_driver_sql(
            "CREATE FUNCTION keep_rows() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'outbox rows are kept'; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER keep_rows BEFORE DELETE ON outbox "
            "FOR EACH ROW EXECUTE FUNCTION keep_rows()"
        )
    relay = Relay(make_settings(store_url, {"svc": {"url": url}}))
    try:
        first = relay.drain()["svc"]
        assert (first.relayed, first.parked) == (2, 2)
        assert "outbox rows are kept" in first.errors[0]
        for _ in range(3):
            again = relay.drain()["svc"]
        assert (again.relayed, again.duplicates, again.parked) == (2, 6, 2)
        assert _only_once(_parked_reasons(relay.log, "svc"))
        assert [e.payload for e in relay.log.read("svc")] == [{"n": 1}, {"n": 4}]
    finally:
        relay.close()
        db.dispose()


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_crash_between_append_and_acknowledge_parks_no_row_twice(
    engine_name: str,
    database_for: Callable[[str], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """A relay killed after its batch reached the log, before the outbox took the
    acknowledgement: the next leader delivers the batch again."""
    url = database_for(engine_name)
    settings = make_settings(pg_database(), {"svc": {"url": url}})
    init_outbox(settings.sources["svc"])
    db = create_engine(url)
    with db.begin() as conn:
        for aggregate_id, payload in _ROWS:
            conn.execute(
                sa.text(
                    "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                    "VALUES ('order', :id, 'OrderPlaced', :payload)"
                ),
                {"id": aggregate_id, "payload": payload},
            )
    log = EventLog(settings.store.url)
    log.create_tables()
    source = open_source("svc", settings.sources["svc"])
    try:
        assert source.try_lead()
        append_unacknowledged(source, log, 100)  # "crashed": the rows stay in the outbox

        totals = SourceRelay(source, log).drain()
        assert (totals.relayed, totals.duplicates, totals.parked) == (0, 2, 0)
        assert _only_once(_parked_reasons(log, "svc"))
        assert [e.payload for e in log.read("svc")] == [{"n": 1}, {"n": 4}]
    finally:
        source.close()
        log.close()
        db.dispose()
