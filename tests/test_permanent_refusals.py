"""A write refused for the value itself (an integer past a column's or BSON's width, a text
too long for its column, any other value a column cannot keep as written: NaN, a tuple into
a PostgreSQL text column) fails alike on every attempt: its event is parked at the first
failure, with the refusal as its reason, instead of after ``max_attempts`` retries with
backoff. Any other handler failure is still retried."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from outbox.log import EventLog
from projections.api import Event, Projection, Tx, UnstorableValueError, WideIntegerError, on
from projections.document_write_errors import refused_for_good as document_refused_for_good
from projections.engine import ProjectionEngine, RetryLater
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.sql_writes import refused_for_good as sql_refused_for_good
from projections.store import Lane, Store
from tests.projection_fixtures import append_tenant_events, engine_on

WIDE = 2**70
ATTEMPTS = 5

limits = sa.Table(
    "limits",
    sa.MetaData(),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("whole", sa.BigInteger),
    sa.Column("code", sa.String(3)),
    sa.Column("note", sa.Text),
)


class Limits(Projection):
    name = "limits"
    tables = (limits,)
    partitions = 1

    @on("bank", "Put")
    def put(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(limits, {"id": event.aggregate_id, **event.payload})

    @on("bank", "Kept")
    def kept(self, event: Event[dict], tx: Tx) -> None:
        try:
            tx.upsert(limits, {"id": event.aggregate_id, "whole": event.payload["whole"]})
        except WideIntegerError:
            tx.upsert(limits, {"id": event.aggregate_id, "note": str(event.payload["whole"])})

    @on("bank", "Odd")
    def odd(self, event: Event[dict], tx: Tx) -> None:
        """A value no JSON payload carries, built from its name."""
        value = _ODD[event.payload["v"]]
        tx.upsert(limits, {"id": event.aggregate_id, event.payload["col"]: value})

    @on("bank", "Broken")
    def broken(self, event: Event[dict], tx: Tx) -> None:
        raise RuntimeError(f"not yet: {event.aggregate_id}")

    @on("bank", "OwnQuery")
    def own_query(self, event: Event[dict], tx: Tx) -> None:
        """A query on the handler's own connection, not the store's: a data exception there
        is the handler's failure, which a later attempt may not meet."""
        dsn = event.payload["dsn"]
        if event.payload["via"] == "psycopg":
            with psycopg.connect(dsn) as conn:
                conn.execute("SELECT 1/0")
        else:
            own = sa.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
            try:
                with own.connect() as conn:
                    conn.execute(sa.text("SELECT CAST('abc' AS integer)"))
            finally:
                own.dispose()

    @on("bank", "Lookup")
    def lookup(self, event: Event[dict], tx: Tx) -> None:
        tx.find(limits, whole=event.payload["whole"])


_ODD: dict[str, Any] = {
    "tuple": (1, "a"),
    "bytes": b"ab",
    "nan": math.nan,
    "decimal nan": Decimal("NaN"),
    "decimal infinity": Decimal("-Infinity"),
    "decimal": Decimal("2.5"),
}


def _process_once(
    url: str, events: list[tuple[str, str, dict[str, Any]]]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], int]:
    """One pass over the lane (no retry loop): rows, parked events by aggregate, checkpoint."""
    projection = Limits()
    with engine_on(url, [projection], max_attempts=ATTEMPTS, retry_backoff=30) as (
        log,
        store,
        engine,
    ):
        append_tenant_events(log, [(None, a, kind, payload) for a, kind, payload in events])
        progress = engine.process(Lane(projection.name, "bank", 0))
        with log.engine.connect() as conn:
            rows = {
                r.id: {k: v for k, v in r._mapping.items() if v is not None}
                for r in conn.execute(sa.select(limits))
            }
        parked = {p.aggregate_id: p for p in store.parked(projection.name)}
    return rows, parked, progress.checkpoint


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_an_integer_past_the_columns_width_parks_its_event_at_the_first_failure(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """``retry_backoff=30``: a retry would raise RetryLater (and catch_up would sleep)."""
    events = [
        ("wide", "Put", {"whole": WIDE}),
        ("caught", "Kept", {"whole": WIDE}),
        ("fits", "Put", {"whole": 7}),
    ]
    rows, parked, checkpoint = _process_once(database_for(kind), events)

    assert checkpoint == 3
    assert rows == {
        "caught": {"id": "caught", "note": str(WIDE)},
        "fits": {"id": "fits", "whole": 7},
    }
    assert sorted(parked) == ["wide"]
    assert parked["wide"].attempts == 1
    reason = parked["wide"].reason
    assert "limits.whole cannot hold a value of type int: " in reason, reason
    assert str(WIDE) not in reason, reason  # never the value: it may be a secret
    assert "refused for good, not retried" in reason, reason


def test_a_text_too_long_for_its_column_parks_its_event_at_the_first_failure(
    pg_database: Callable[[], str],
) -> None:
    """Refused by the upsert, naming the column, where PostgreSQL refused it at the flush (a
    data exception, class 22): whatever the attempt. Excess blanks are cut, as PostgreSQL
    cuts them."""
    events = [("long", "Put", {"code": "abcd"}), ("short", "Put", {"code": "abc"})]
    events.append(("blanks", "Put", {"code": "abc   "}))
    rows, parked, checkpoint = _process_once(pg_database(), events)

    assert checkpoint == 3
    assert rows == {
        "short": {"id": "short", "code": "abc"},
        "blanks": {"id": "blanks", "code": "abc"},
    }
    assert parked["long"].attempts == 1
    reason = parked["long"].reason
    assert reason.startswith("refused for good, not retried: UnstorableValueError"), reason
    assert "limits.code cannot hold a value of type str: value too long for type character " in (
        reason
    )
    assert "abcd" not in reason, reason


@pytest.mark.parametrize(
    ("kind", "odd"),
    [
        ("postgresql", [("note", "tuple"), ("note", "bytes"), ("whole", "decimal nan")]),
        ("sqlite", [("note", "nan"), ("whole", "decimal nan"), ("whole", "decimal infinity")]),
    ],
)
def test_a_value_no_column_keeps_parks_its_event_at_the_first_failure(
    kind: str, odd: list[tuple[str, str]], database_for: Callable[[str], str]
) -> None:
    """:class:`UnstorableValueError` (raised by the write, naming the column) is refused for
    good like the integers past a column's width, whichever backend or column refused it."""
    events = [(f"{col}-{v}", "Odd", {"col": col, "v": v}) for col, v in odd]
    events.append(("fits", "Odd", {"col": "whole", "v": "decimal"}))
    rows, parked, checkpoint = _process_once(database_for(kind), events)

    assert checkpoint == len(events)
    assert rows == {"fits": {"id": "fits", "whole": 3}}  # half away from zero, on both
    assert sorted(parked) == sorted(key for key, _, _ in events[:-1])
    for col, v in odd:
        key = f"{col}-{v}"
        entry = parked[key]
        assert entry.attempts == 1, (key, entry.reason)
        assert entry.reason.startswith("refused for good, not retried: UnstorableValueError"), (
            entry.reason
        )
        assert f"limits.{col} cannot hold a value of type " in entry.reason, entry.reason
        assert repr(_ODD[v]) not in entry.reason, entry.reason


@pytest.mark.parametrize(
    "refused_for_good", [sql_refused_for_good, document_refused_for_good, Store.refused_for_good]
)
def test_every_store_takes_an_unstorable_value_for_refused_for_good(
    refused_for_good: Callable[..., bool],
) -> None:
    """The SQL stores', the document store's and the default classification agree: the one
    public error of a value a column cannot keep, and its kind for wide integers."""
    args = (None,) if refused_for_good is Store.refused_for_good else ()
    assert refused_for_good(*args, UnstorableValueError("t.c cannot hold nan: ..."))
    assert refused_for_good(*args, WideIntegerError("t.c cannot hold the integer ..."))
    assert not refused_for_good(*args, ValueError("a handler's own"))


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_handler_failure_is_still_retried_before_it_is_parked(
    kind: str, database_for: Callable[[str], str]
) -> None:
    projection = Limits()
    with engine_on(database_for(kind), [projection], max_attempts=3, retry_backoff=0.001) as (
        log,
        store,
        engine,
    ):
        append_tenant_events(log, [(None, "b1", "Broken", {}), (None, "ok", "Put", {"whole": 1})])
        lane = Lane(projection.name, "bank", 0)
        for attempt in (1, 2):
            with pytest.raises(RetryLater) as retry:
                engine.process(lane)
            assert retry.value.attempts == attempt
        assert engine.process(lane).checkpoint == 2
        parked = store.parked(projection.name)
    assert [(p.aggregate_id, p.attempts) for p in parked] == [("b1", 3)]
    assert parked[0].reason.startswith("handler failed 3 times")


class WideDocs(Projection):
    name = "wide_docs"
    store = "docs"
    collections = ("wide_docs",)
    partitions = 1

    @on("bank", "Put")
    def put(self, event: Event[dict], tx: Any) -> None:
        use = event.payload["use"]
        if use == "field":  # refused when the batch is written (BSON: 64-bit integers)
            tx.upsert("wide_docs", {"_id": event.aggregate_id, "n": event.payload["v"]})
        elif use == "key":  # refused by the read itself
            tx.get("wide_docs", event.payload["v"])
        elif use == "caught":
            try:
                tx.get("wide_docs", event.payload["v"])
            except WideIntegerError:
                tx.upsert("wide_docs", {"_id": event.aggregate_id, "n": str(event.payload["v"])})
        else:
            tx.upsert("wide_docs", {"_id": event.aggregate_id, "n": event.payload["v"]})


@pytest.mark.parametrize("batch_size", [1, 50])
def test_mongodb_refusals_of_integers_past_64_bits_park_at_the_first_failure(
    batch_size: int, pg_database: Callable[[], str], mongo_database: Callable[[], str]
) -> None:
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    projection = WideDocs()
    store.create_tables([projection])
    engine = ProjectionEngine(
        LogReader(log),
        [projection],
        {"docs": store},
        max_attempts=ATTEMPTS,
        retry_backoff=30,
        batch_size=batch_size,
    )
    uses = ["field", "key", "caught", "fits"]
    try:
        append_tenant_events(
            log,
            [(None, use, "Put", {"v": 7 if use == "fits" else WIDE, "use": use}) for use in uses],
        )
        lane = Lane(projection.name, "bank", 0)
        checkpoint = 0
        for _ in uses:  # each pass parks at most one event, none raises RetryLater
            checkpoint = engine.process(lane).checkpoint
            if checkpoint == len(uses):
                break
        found = {d["_id"]: d["n"] for d in store.database["wide_docs"].find()}
        parked = {p.aggregate_id: p for p in store.parked(projection.name)}
    finally:
        engine.close()
        store.close()
        log.close()

    assert checkpoint == len(uses)
    assert found == {"caught": str(WIDE), "fits": 7}
    assert sorted(parked) == ["field", "key"]
    for use, entry in parked.items():
        assert entry.attempts == 1, (use, entry.reason)
        assert "64-bit" in entry.reason, entry.reason
        assert str(WIDE) not in entry.reason, entry.reason  # never the value
        assert "refused for good, not retried" in entry.reason, entry.reason


@pytest.mark.parametrize("via", ["psycopg", "sqlalchemy"])
def test_a_data_exception_of_the_handlers_own_query_is_retried_before_it_is_parked(
    via: str, pg_database: Callable[[], str]
) -> None:
    """Only the store's refusals of what the handler gave it through the Tx are for good."""
    url = pg_database()
    projection = Limits()
    with engine_on(url, [projection], max_attempts=2, retry_backoff=0.001) as (
        log,
        store,
        engine,
    ):
        payload = {"dsn": url, "via": via}
        append_tenant_events(log, [(None, "own", "OwnQuery", payload), (None, "ok", "Put", {})])
        lane = Lane(projection.name, "bank", 0)
        with pytest.raises(RetryLater) as retry:
            engine.process(lane)
        assert retry.value.attempts == 1
        assert store.parked(projection.name) == []
        assert engine.process(lane).checkpoint == 2
        parked = store.parked(projection.name)
    assert [(p.aggregate_id, p.attempts) for p in parked] == [("own", 2)]
    expected = "DivisionByZero" if via == "psycopg" else "InvalidTextRepresentation"
    assert parked[0].reason.startswith("handler failed 2 times"), parked[0].reason
    assert expected in parked[0].reason, parked[0].reason


def test_a_lookup_through_the_tx_of_a_value_its_column_refuses_parks_at_the_first_failure(
    pg_database: Callable[[], str],
) -> None:
    events = [("bad", "Lookup", {"whole": "abc"}), ("ok", "Lookup", {"whole": 7})]
    rows, parked, checkpoint = _process_once(pg_database(), events)

    assert checkpoint == 2
    assert sorted(parked) == ["bad"]
    assert parked["bad"].attempts == 1
    assert "refused for good, not retried" in parked["bad"].reason, parked["bad"].reason
    # Refused by the lookup's own conversion, naming the column (the server's "operator does
    # not exist" aborted the transaction before tx.find converted its values).
    assert "limits.whole cannot hold a value of type str" in parked["bad"].reason
    assert "'abc'" not in parked["bad"].reason, parked["bad"].reason
