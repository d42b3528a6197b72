"""Payload integers past 64 bits (orjson reads them as doubles) reach handlers, JSON columns
and cached reads exactly; a column or document that cannot hold one refuses the event,
naming the column or field and the value, and the event is parked."""

from __future__ import annotations

import json
from ast import literal_eval
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from outbox.log import EventLog
from projections.api import Event, Projection, Tx, WideIntegerError, on
from projections.cache import Cache, MemoryCache
from projections.cache import dumps as cache_dumps
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.query_service import Queries
from projections.redis_cache import RedisCache
from tests.cache_helpers import REDIS_URL, RecordingHooks, redis_prefix
from tests.cli_helpers import run_cli, write_config
from tests.projection_fixtures import append_tenant_events, engine_on

BIG = 2**64  # orjson: 1.8446744073709552e+19 (the same double as 2**64 + 1)
LOW = -(2**63) - 1  # orjson: -9.223372036854776e+18, that is -2**63
HUGE = -(10**309)  # orjson: refused, "number is infinity when parsed as double"
PAYLOAD = {"amount": BIG, "low": LOW, "lines": [{"n": BIG + 1}], "huge": HUGE, "ratio": 0.1}

metadata = sa.MetaData()
amounts = sa.Table(
    "big_amounts",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("doc", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    sa.Column("seen", sa.Text),  # the payload as the handler saw it (repr)
    sa.Column("exact", sa.Numeric),
    sa.Column("low", sa.Numeric),
    sa.Column("whole", sa.BigInteger),
)


class Amounts(Projection):
    name = "big_amounts"
    tables = (amounts,)
    partitions = 1
    key_tags = {"big_amounts": "account:{id}"}

    @on("bank", "Documented")
    def documented(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(
            amounts, {"id": event.aggregate_id, "doc": event.payload, "seen": repr(event.payload)}
        )

    @on("bank", "Copied")
    def copied(self, event: Event[dict], tx: Tx) -> None:
        """The row written before, read back (from the batch, or from the table)."""
        row = tx.get(amounts, event.aggregate_id)
        assert row is not None
        tx.upsert(amounts, {**row, "id": f"{event.aggregate_id}-copy"})

    @on("bank", "Counted")
    def counted(self, event: Event[dict], tx: Tx) -> None:
        row = {"id": event.aggregate_id, "exact": event.payload["amount"]}
        tx.upsert(amounts, {**row, "low": event.payload["low"]})

    @on("bank", "Tallied")
    def tallied(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(amounts, {"id": event.aggregate_id, "whole": event.payload["amount"]})


def _rows(log: EventLog) -> dict[str, dict[str, Any]]:
    with log.engine.connect() as conn:
        return {r.id: dict(r._mapping) for r in conn.execute(sa.select(amounts))}


def _apply(
    url: str, events: list[tuple[str, str, dict[str, Any]]], batch_size: int
) -> tuple[dict[str, dict[str, Any]], list[Any]]:
    projection = Amounts()
    with engine_on(
        url, [projection], batch_size=batch_size, max_attempts=2, retry_backoff=0.001
    ) as (log, store, engine):
        append_tenant_events(log, [(None, account, kind, p) for account, kind, p in events])
        engine.catch_up(deadline=60)
        return _rows(log), sorted(store.parked(projection.name), key=lambda p: p.position)


def _exact(value: Any) -> Any:
    """``value`` with each number tagged by its type: ``1.8e19 == 2**64`` would pass."""
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    return (type(value).__name__, value)


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("batch_size", [1, 50])
def test_integers_past_64_bits_reach_handlers_and_json_columns_exactly(
    kind: str, batch_size: int, database_for: Callable[[str], str]
) -> None:
    events = [
        ("a1", "Documented", PAYLOAD),
        ("a1", "Copied", {}),
        ("a2", "Documented", {"amount": 7}),
    ]
    rows, parked = _apply(database_for(kind), events, batch_size)

    assert parked == []
    assert _exact(literal_eval(rows["a1"]["seen"])) == _exact(PAYLOAD)  # the handler's view
    assert _exact(rows["a1"]["doc"]) == _exact(PAYLOAD)
    # read back within the batch (from memory) or in a later one (from the table): alike
    assert _exact(rows["a1-copy"]["doc"]) == _exact(PAYLOAD)
    assert rows["a1-copy"]["seen"] == rows["a1"]["seen"]
    assert rows["a2"]["doc"] == {"amount": 7}


@pytest.mark.parametrize("batch_size", [1, 50])
def test_a_numeric_column_holds_them_on_postgresql_and_bigint_refuses_naming_it(
    batch_size: int, pg_database: Callable[[], str]
) -> None:
    events = [
        ("a1", "Counted", {"amount": BIG, "low": LOW}),
        ("a1", "Copied", {}),
        ("a2", "Tallied", {"amount": BIG}),
        ("a3", "Tallied", {"amount": 2**63 - 1}),
    ]
    rows, parked = _apply(pg_database(), events, batch_size)

    assert (rows["a1"]["exact"], rows["a1"]["low"]) == (Decimal(BIG), Decimal(LOW))
    assert (rows["a1-copy"]["exact"], rows["a1-copy"]["low"]) == (Decimal(BIG), Decimal(LOW))
    assert rows["a3"]["whole"] == 2**63 - 1  # the lane went on
    assert [(p.aggregate_id, p.position) for p in parked] == [("a2", 3)]
    reason = parked[0].reason
    assert "big_amounts.whole" in reason and str(BIG) not in reason, reason  # never the value
    assert "64-bit" in reason, reason


@pytest.mark.parametrize("batch_size", [1, 50])
def test_sqlite_refuses_them_in_numeric_and_integer_columns_naming_the_column(
    batch_size: int, sqlite_database: Callable[[], str]
) -> None:
    """SQLite's numbers are 64-bit integers or doubles: a NUMERIC column would keep a double
    (SQLAlchemy binds a float), an INTEGER one makes the driver overflow."""
    events = [
        ("a1", "Counted", {"amount": BIG, "low": 1}),
        ("a2", "Counted", {"amount": 1, "low": LOW}),
        ("a3", "Tallied", {"amount": BIG}),
        ("a4", "Counted", {"amount": 2**63 - 1, "low": -(2**63)}),
    ]
    rows, parked = _apply(sqlite_database(), events, batch_size)

    assert sorted(rows) == ["a4"]  # the lane went on
    assert [(p.aggregate_id, p.position) for p in parked] == [("a1", 1), ("a2", 2), ("a3", 3)]
    wanted = [("big_amounts.exact", BIG), ("big_amounts.low", LOW), ("big_amounts.whole", BIG)]
    for entry, (column, value) in zip(parked, wanted, strict=True):
        assert column in entry.reason and str(value) not in entry.reason, entry.reason
        assert "64-bit" in entry.reason, entry.reason


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    if request.param == "memory":
        yield MemoryCache(hooks=RecordingHooks())
        return
    with redis_prefix() as prefix:
        made = RedisCache(REDIS_URL, key_prefix=prefix, hooks=RecordingHooks())
        try:
            yield made
        finally:
            made.close()


def test_a_cached_read_returns_them_exactly_cold_and_warm(
    cache: Cache, pg_database: Callable[[], str]
) -> None:
    projection = Amounts()
    with engine_on(pg_database(), [projection], cache=cache) as (log, store, engine):
        append_tenant_events(
            log, [(None, "a1", "Documented", PAYLOAD), (None, "a1", "Counted", PAYLOAD)]
        )
        engine.catch_up(deadline=60)
        queries = Queries([projection], {"default": store}, log.engine, cache=cache)
        try:
            cold = queries.get("big_amounts", "a1").value
            warm = queries.get("big_amounts", "a1").value
        finally:
            queries.close()

    hooks: Any = cache.hooks
    assert (hooks.misses, hooks.hits) == (1, 1)
    assert _exact(cold["doc"]) == _exact(PAYLOAD)
    assert cold["exact"] == str(BIG)  # a NUMERIC is read as a Decimal, sent as its text
    assert _exact(warm) == _exact(cold)


def test_a_cache_entry_is_never_written_that_could_not_be_read_back() -> None:
    """Past Python's 4300 digits an integer's JSON could not be read back: refused, naming
    the entry (it was a ValueError the cache did not expect)."""
    with pytest.raises(TypeError) as refused:
        cache_dumps("big_amounts", "a1", {"doc": {"n": 10**5000}})

    assert "cache big_amounts:a1: the value is not JSON-serialisable" in str(refused.value)
    assert "(5001 digits)" in str(refused.value)


def test_readmodel_query_prints_them_exactly(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    url = pg_database()
    with engine_on(url, [Amounts()]) as (log, _, engine):
        append_tenant_events(log, [(None, "a1", "Documented", PAYLOAD)])
        engine.catch_up(deadline=60)
    config = write_config(
        tmp_path / "readmodel.toml",
        {"projections": ["tests.test_big_integers:Amounts"], "store": {"url": url}},
    )

    got = run_cli(["query", "big_amounts", "a1", "--json", "--config", str(config)])

    assert got.exit_code == 0, got.output
    assert _exact(json.loads(got.stdout)["row"]["doc"]) == _exact(PAYLOAD)


class BigDocs(Projection):
    name = "big_docs"
    store = "docs"
    collections = ("big_docs",)

    @on("bank", "Documented")
    def documented(self, event: Event[dict], tx: Any) -> None:
        document = {"_id": event.aggregate_id, "seen": repr(event.payload)}
        if "keep" in event.payload:
            document["kept"] = {"values": [event.payload["keep"]]}
        tx.upsert("big_docs", document)


def test_a_document_refuses_them_naming_the_field_and_the_handler_saw_them_exactly(
    pg_database: Callable[[], str], mongo_database: Callable[[], str]
) -> None:
    """BSON integers are 64-bit, and a document holds what its handler wrote (a Decimal128
    would read back as another type): the event is parked, naming the field."""
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    projection = BigDocs()
    store.create_tables([projection])
    engine = ProjectionEngine(
        LogReader(log), [projection], {"docs": store}, max_attempts=2, retry_backoff=0.001
    )
    try:
        append_tenant_events(
            log,
            [
                (None, "a1", "Documented", PAYLOAD),
                (None, "a2", "Documented", {"keep": LOW}),
                (None, "a3", "Documented", {"keep": 2**63 - 1}),
            ],
        )
        engine.catch_up(deadline=60)
        found = {d["_id"]: d for d in store.database["big_docs"].find()}
        parked = store.parked(projection.name)
    finally:
        engine.close()
        store.close()
        log.close()

    assert _exact(literal_eval(found["a1"]["seen"])) == _exact(PAYLOAD)
    assert found["a3"]["kept"] == {"values": [2**63 - 1]}
    assert [(p.aggregate_id, p.position) for p in parked] == [("a2", 2)]
    reason = parked[0].reason
    assert "'kept.values.0'" in reason and "big_docs" in reason, reason
    assert str(LOW) not in reason, reason  # never the value: it may be a secret
    assert "64-bit" in reason, reason


class BigKeys(Projection):
    """Reads, deletes and finds by a key holding the payload's integer."""

    name = "big_keys"
    store = "docs"
    collections = ("big_keys",)

    @on("bank", "Used")
    def used(self, event: Event[dict], tx: Any) -> None:
        value, use = event.payload["v"], event.payload["use"]
        if use == "get":
            tx.get("big_keys", value)
        elif use == "delete":
            tx.delete("big_keys", value)
        elif use == "find":
            tx.find("big_keys", owner={"$in": [1, value]})
        elif use == "compound":
            tx.upsert("big_keys", {"_id": {"bank": "b1", "number": value}, "n": 1})
        try:
            tx.get("big_keys", value)
        except WideIntegerError:  # a handler may catch it
            tx.upsert("big_keys", {"_id": event.aggregate_id, "number": str(value)})


@pytest.mark.parametrize("batch_size", [1, 50])
def test_a_key_or_filter_past_64_bits_is_refused_naming_the_collection_and_field(
    batch_size: int, pg_database: Callable[[], str], mongo_database: Callable[[], str]
) -> None:
    """No document can hold it, and the driver's OverflowError ("MongoDB can only handle up
    to 8-byte ints") named neither the collection nor the field."""
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    projection = BigKeys()
    store.create_tables([projection])
    engine = ProjectionEngine(
        LogReader(log),
        [projection],
        {"docs": store},
        max_attempts=2,
        retry_backoff=0.001,
        batch_size=batch_size,
    )
    uses = ["get", "delete", "find", "compound", "caught"]
    try:
        append_tenant_events(log, [(None, use, "Used", {"v": BIG, "use": use}) for use in uses])
        engine.catch_up(deadline=60)
        found = {d["_id"]: d for d in store.database["big_keys"].find()}
        parked = {p.aggregate_id: p.reason for p in store.parked(projection.name)}
    finally:
        engine.close()
        store.close()
        log.close()

    assert found == {"caught": {"_id": "caught", "number": str(BIG)}}
    wanted = {
        "get": "'big_keys': a read's _id holds an integer in '_id'",
        "delete": "'big_keys': a delete's _id holds an integer in '_id'",
        "find": "'big_keys': a find's filter holds an integer in 'owner.$in.1'",
        "compound": "'big_keys': a document's _id holds an integer in '_id.number'",
    }
    assert sorted(parked) == sorted(wanted)
    for use, reason in wanted.items():
        assert reason in parked[use] and "64-bit" in parked[use], parked[use]
        assert str(BIG) not in parked[use], parked[use]
        assert "OverflowError" not in parked[use]
