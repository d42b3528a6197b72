"""The projection engine on PostgreSQL and SQLite stores: exactly-once effects, order per
aggregate, read-your-writes inside a batch, auxiliary tables, several sources, parking."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from structlog.testing import capture_logs

from config import Settings
from outbox.relay import Relay
from projections.api import Event, Projection, Tx, on
from projections.engine import EngineHooks
from projections.store import BatchResult, Lane
from tests.outbox_helpers import init_outbox, insert_events
from tests.projection_fixtures import (
    CustomerSpend,
    Totals,
    account_totals,
    balances,
    customer_spend,
    engine_on,
    log_events,
)
from workers.runtime import Runtime, build_runtime

FIXTURES = "tests.projection_fixtures"


class Pipeline:
    """Sources on SQLite files, the log and read models in the store under test."""

    def __init__(self, make_settings: Callable[..., Settings], store_url: str, sqlite: Any):
        self.sources = {name: sqlite() for name in ("bank", "orders", "auth")}
        self.settings = make_settings(
            store_url,
            {name: {"url": url} for name, url in self.sources.items()},
            projections=[FIXTURES],
        )
        self.engines = {}
        for name in self.sources:
            init_outbox(self.settings.sources[name], name)
            self.engines[name] = sa.create_engine(self.sources[name])
        self.runtime: Runtime = build_runtime(self.settings)

    def write(self, source: str, events: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        insert_events(self.engines[source], events)

    def relay(self) -> None:
        relay = Relay(self.settings, log=self.runtime.log)
        relay.drain()

    def rows(self, table: sa.Table) -> dict[str, dict[str, Any]]:
        with self.runtime.log.engine.connect() as conn:
            return {row[0]: dict(row._mapping) for row in conn.execute(sa.select(table))}

    def close(self) -> None:
        self.runtime.close()
        for engine in self.engines.values():
            engine.dispose()


@pytest.fixture
def pipeline(
    make_settings: Callable[..., Settings], store_url: str, sqlite_database: Any
) -> Iterator[Pipeline]:
    p = Pipeline(make_settings, store_url, sqlite_database)
    yield p
    p.close()


def _deposits(n: int, accounts: int, seed: int = 1) -> list[tuple[str, str, str, dict[str, Any]]]:
    rng = random.Random(seed)
    seqs: dict[str, int] = {}
    events = []
    for _ in range(n):
        account = f"acct-{rng.randrange(accounts)}"
        seqs[account] = seqs.get(account, 0) + 1
        events.append(
            (
                "account",
                account,
                "Deposited",
                {"amount": rng.randint(1, 1000), "seq": seqs[account]},
            )
        )
    return events


def _expected_totals(events: list[tuple[str, str, str, dict[str, Any]]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for _, account, _, payload in events:
        totals[account] = totals.get(account, 0) + payload["amount"]
    return totals


def test_totals_exact_once_in_order_despite_duplicate_work(pipeline: Pipeline) -> None:
    events = _deposits(3000, 37)
    pipeline.write("bank", events)
    pipeline.relay()
    engine = pipeline.runtime.engine
    engine.batch_size = 128

    engine.catch_up(["totals"])
    # Duplicate and stale deliveries: every lane processed again, with old and new targets.
    for lane in engine.lanes(engine.projection("totals")):
        engine.process(lane, target=10)
        engine.process(lane)

    rows = pipeline.rows(account_totals)
    assert {k: r["total"] for k, r in rows.items()} == _expected_totals(events)
    assert sum(r["events"] for r in rows.values()) == 3000
    assert all(r["violations"] == 0 for r in rows.values())
    assert engine.lagging(["totals"]) == []


def test_lost_messages_cost_nothing_lane_pulls_missing_range(pipeline: Pipeline) -> None:
    first, second = _deposits(500, 5, seed=2), _deposits(500, 5, seed=3)
    pipeline.write("bank", first)
    pipeline.relay()
    engine = pipeline.runtime.engine
    # Only the message for the second range arrives: the lane still applies both ranges.
    pipeline.write("bank", [(a, b, c, {**p, "seq": p["seq"] + 10_000}) for a, b, c, p in second])
    pipeline.relay()
    head = pipeline.runtime.log.head("bank")
    for lane in engine.lanes(engine.projection("totals")):
        engine.process(lane, target=head)
    rows = pipeline.rows(account_totals)
    assert sum(r["events"] for r in rows.values()) == 1000


def test_handler_failure_parks_aggregate_others_flow_then_retry(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _deposits(800, 8, seed=4)
    pipeline.write("bank", events)
    pipeline.relay()
    engine = pipeline.runtime.engine
    engine.max_attempts = 3
    engine.retry_backoff = 0.001
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-3")

    engine.catch_up(["totals"])

    expected = _expected_totals(events)
    rows = pipeline.rows(account_totals)
    assert "acct-3" not in rows
    assert {k: r["total"] for k, r in rows.items()} == {
        k: v for k, v in expected.items() if k != "acct-3"
    }
    parked = engine.parked("totals")
    acct3 = [e for e in events if e[1] == "acct-3"]
    assert len(parked) == len(acct3)
    assert [p.aggregate_id for p in parked] == ["acct-3"] * len(acct3)
    assert "refusing acct-3" in parked[0].reason and parked[0].attempts == 3
    assert "RuntimeError" in (parked[0].detail or "")
    assert all(p.reason.startswith("held:") for p in parked[1:])
    assert engine.lagging(["totals"]) == []

    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
    assert engine.retry(parked[0]) == len(acct3)

    rows = pipeline.rows(account_totals)
    assert {k: r["total"] for k, r in rows.items()} == expected
    assert all(r["violations"] == 0 for r in rows.values())
    assert engine.parked("totals") == []
    assert {p.status for p in engine.parked("totals", status=None)} == {"retried"}
    # Later events of the released aggregate flow normally again.
    pipeline.write(
        "bank", [("account", "acct-3", "Deposited", {"amount": 5, "seq": len(acct3) + 1})]
    )
    pipeline.relay()
    engine.catch_up(["totals"])
    assert pipeline.rows(account_totals)["acct-3"]["total"] == expected["acct-3"] + 5


def test_aux_tables_several_sources_and_upcasting(pipeline: Pipeline) -> None:
    pipeline.write(
        "orders",
        [
            ("order", "o1", "OrderPlaced", {"customer": "c1", "amount": 100, "schema_version": 2}),
            ("order", "o2", "OrderPlaced", {"customer": "c1", "cents": 250, "schema_version": 1}),
            ("order", "o3", "OrderPlaced", {"customer": "c2", "amount": 40, "schema_version": 2}),
            ("order", "o1", "OrderCancelled", {}),
            ("order", "o9", "OrderCancelled", {}),
        ],
    )
    pipeline.write("auth", [("user", "c1", "UserRegistered", {"email": "c1@example.com"})])
    pipeline.relay()
    pipeline.runtime.engine.catch_up(["customer_spend"])
    rows = pipeline.rows(customer_spend)
    assert rows["c1"] == {"customer": "c1", "email": "c1@example.com", "orders": 1, "spent": 250}
    assert rows["c2"] == {"customer": "c2", "email": None, "orders": 1, "spent": 40}


@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "no-prefetch"])
def test_parallel_lanes_sharing_rows_stay_exact(
    pipeline: Pipeline, prefetch: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not prefetch:  # rows are then locked as handlers read them, still in one order
        monkeypatch.setattr(CustomerSpend, "prefetch", Projection.prefetch)
    rng = random.Random(7)
    orders = [
        (
            "order",
            f"o{i}",
            "OrderPlaced",
            {"customer": f"c{rng.randrange(3)}", "amount": i, "schema_version": 2},
        )
        for i in range(1, 1201)
    ]
    pipeline.write("orders", orders)
    pipeline.relay()
    engine = pipeline.runtime.engine
    engine.batch_size = 50
    lanes = engine.lanes(engine.projection("customer_spend"), "orders")
    errors: list[BaseException] = []
    batches: list[tuple[Lane, float, float]] = []  # (lane, started, committed)

    class Timed(EngineHooks):
        def after_batch(self, lane: Lane, result: BatchResult, seconds: float) -> None:
            if result.applied:
                batches.append((lane, time.perf_counter() - seconds, time.perf_counter()))

    engine.hooks = Timed()

    def work(lane: Lane) -> None:
        try:
            engine.process(lane)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(lane,)) for lane in lanes]
    with capture_logs() as logs:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert [e for e in logs if "deadlock" in e["event"]] == []  # tests/test_lane_lock_order.py
    expected: dict[str, int] = {}
    for _, _, _, p in orders:
        expected[p["customer"]] = expected.get(p["customer"], 0) + p["amount"]
    rows = pipeline.rows(customer_spend)
    assert {k: r["spent"] for k, r in rows.items()} == expected
    assert sum(r["orders"] for r in rows.values()) == len(orders)
    # In parallel indeed: every lane applied events, and batches of two lanes overlapped.
    assert {lane for lane, _, _ in batches} == set(lanes)
    assert any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2] for a in batches for b in batches), (
        batches
    )


operations = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["Deposited", "Withdrawn"]),
        st.integers(1, 50),
    ),
    min_size=1,
    max_size=60,
)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations, batch_size=st.integers(1, 70))
def test_batching_never_changes_what_handlers_see(
    make_settings: Callable[..., Settings],
    sqlite_database: Any,
    store_url: str,
    ops: list[tuple[str, str, int]],
    batch_size: int,
) -> None:
    p = Pipeline(make_settings, sqlite_database(), sqlite_database)
    try:
        p.write("bank", [("account", a, kind, {"amount": n, "seq": 0}) for a, kind, n in ops])
        p.relay()
        p.runtime.engine.batch_size = batch_size
        p.runtime.engine.catch_up(["balances"])
        expected: dict[str, dict[str, int]] = {}
        for account, kind, amount in ops:
            row = expected.setdefault(account, {"balance": 0, "rejected": 0})
            if kind == "Deposited":
                row["balance"] += amount
            elif row["balance"] < amount:
                row["rejected"] += 1
            else:
                row["balance"] -= amount
        got = {
            k: {"balance": r["balance"], "rejected": r["rejected"]}
            for k, r in p.rows(balances).items()
        }
        assert got == expected
    finally:
        p.close()


def test_a_trigger_for_a_lane_in_progress_is_handed_to_the_applying_thread(
    pipeline: Pipeline,
) -> None:
    """A second thread does not queue on a lane this process is applying: it hands its
    target over, and the applying thread goes on until it has reached it."""
    pipeline.write("bank", [("account", "acct-1", "Deposited", {"amount": 1, "seq": 1})])
    pipeline.relay()
    engine = pipeline.runtime.engine
    lane = engine.lane_of(engine.projection("totals"), pipeline.runtime.log.read("bank", 0, 1)[0])
    first_head = pipeline.runtime.log.head("bank")
    gate, inside, calls = threading.Event(), threading.Event(), []
    original = engine.process

    def gated_process(lane: Lane, target: int | None = None) -> Any:
        calls.append(target)
        if len(calls) == 1:  # the first pass read its head before the later events came
            inside.set()
            assert gate.wait(30)
            return original(lane, target=first_head)
        return original(lane, target)

    engine.process = gated_process  # type: ignore[method-assign]
    applying = threading.Thread(target=engine.process_trigger, args=(lane, first_head))
    applying.start()
    assert inside.wait(30)
    pipeline.write("bank", [("account", "acct-1", "Deposited", {"amount": 2, "seq": 2})])
    pipeline.relay()
    second_head = pipeline.runtime.log.head("bank")
    assert engine.process_trigger(lane, second_head) is None  # handed over, not applied here
    assert engine.store_of("totals").checkpoint(lane) == 0
    gate.set()
    applying.join(30)

    assert not applying.is_alive()
    assert len(calls) == 2
    assert engine.store_of("totals").checkpoint(lane) == second_head
    assert pipeline.rows(account_totals)["acct-1"]["total"] == 3
    assert engine.process_trigger(lane, second_head) is None  # reached: no round trip


upcast_metadata = sa.MetaData()
cents_tables = [
    sa.Table(
        f"upcast_cents_{n}",
        upcast_metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("cents", sa.BigInteger, nullable=False),
    )
    for n in (1, 2)
]
_failed_once: set[str] = set()


def _prices_in_cents(payload: dict[str, Any]) -> dict[str, Any]:
    for line in payload["lines"]:  # changes the nested items in place
        line["price"] *= 100
    return payload


def _cents_projection(n: int) -> Projection:
    table = cents_tables[n - 1]

    class Cents(Projection):
        name = f"upcast_cents_{n}"
        tables = (table,)
        partitions = 1
        upcasters = {("Placed", 1): _prices_in_cents}

        @on("shop", "Placed")
        def placed(self, event: Event[dict], tx: Tx) -> None:
            if n == 1 and event.aggregate_id == "o2" and "o2" not in _failed_once:
                _failed_once.add("o2")
                raise RuntimeError("fails once: the batch is applied again")
            cents = sum(line["price"] for line in event.payload["lines"])
            tx.upsert(table, {"id": event.aggregate_id, "cents": cents})

    return Cents()


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_an_upcaster_changing_nested_items_in_place_changes_no_other_reader(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """Envelopes are shared (a batch applied again after a failure, two projections of the
    same events): each upcaster and handler gets its own deep copy of the payload."""
    _failed_once.clear()
    url = database_for(kind)
    projections = [_cents_projection(1), _cents_projection(2)]
    with engine_on(url, projections, retry_backoff=0.001) as (log, store, engine):
        log_events(
            log,
            [
                ("o1", "Placed", {"schema_version": 1, "lines": [{"price": 3}]}),
                ("o2", "Placed", {"schema_version": 1, "lines": [{"price": 5}, {"price": 1}]}),
            ],
        )
        engine.catch_up(deadline=30)
        with log.engine.connect() as conn:
            for table in cents_tables:
                assert dict(conn.execute(sa.select(table)).all()) == {"o1": 300, "o2": 600}


stamped = sa.Table(
    "stamped_notes",
    upcast_metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)


class Noted(BaseModel):
    note: str
    at: datetime


class LatestNote(Projection):
    """Last write wins by the payload's time (given with an offset)."""

    name = "latest_note"
    tables = (stamped,)
    partitions = 1

    @on("shop", "Noted")
    def noted(self, event: Event[Noted], tx: Tx) -> None:
        row = tx.get(stamped, event.aggregate_id)
        if row is None or row["at"] <= event.payload.at:
            tx.upsert(stamped, {"id": event.aggregate_id, **event.payload.model_dump()})


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("batch_size", [1, 10])
def test_aware_datetimes_are_the_same_instant_read_back_in_any_batch(
    kind: str, batch_size: int, database_for: Callable[[str], str]
) -> None:
    """SQLite kept an aware datetime's wall time without its offset and read it back naive:
    comparing it with an aware one raised, and the instant moved by the offset."""
    url = database_for(kind)
    projection = LatestNote()
    with engine_on(url, [projection], batch_size=batch_size) as (log, store, engine):
        log_events(
            log,
            [
                ("n1", "Noted", {"note": "first", "at": "2024-05-01T10:00:00+02:00"}),
                ("n1", "Noted", {"note": "stale", "at": "2024-05-01T07:30:00Z"}),
                ("n1", "Noted", {"note": "third", "at": "2024-05-01T09:00:00+01:00"}),
            ],
        )
        engine.catch_up(deadline=30)
        assert store.parked(projection.name) == []
        with log.engine.connect() as conn:
            (row,) = conn.execute(sa.select(stamped)).all()
        assert row.note == "third"
        assert row.at == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def test_forty_threads_applying_lanes_at_once_all_finish(
    make_settings: Callable[..., Settings], pg_database: Callable[[], str], sqlite_database: Any
) -> None:
    """Each applying thread holds its batch's connection while it reads the log on another:
    with more threads than the default pool (30 connections) they waited for each other
    until the pool's 30 s timeout, again and again (``readmodel work --threads 40``)."""
    source = sqlite_database()
    sources = {name: {"url": sqlite_database()} for name in ("orders", "auth")}
    sources["bank"] = {"url": source}
    settings = make_settings(pg_database(), sources, projections=[FIXTURES])
    init_outbox(settings.sources["bank"], "bank")
    writer = sa.create_engine(source)
    runtime = build_runtime(settings, threads=40)
    try:
        events = _deposits(2000, 37)
        insert_events(writer, events)
        Relay(settings, log=runtime.log).drain()
        engine = runtime.engine
        engine.batch_size = 50
        lanes = engine.lanes(engine.projection("totals"))
        failures: list[BaseException] = []

        def apply(n: int) -> None:
            try:
                engine.process(lanes[n % len(lanes)])
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=apply, args=(n,)) for n in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        assert failures == []
        with runtime.log.engine.connect() as conn:
            query = sa.select(account_totals.c.account, account_totals.c.total)
            totals = {account: total for account, total in conn.execute(query)}
        assert totals == _expected_totals(events)
    finally:
        runtime.close()
        writer.dispose()


def test_parked_at_the_first_failure_keeps_the_events_before_it(
    database_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``max_attempts = 1`` the events of the failing batch before the failing event
    were held behind it (parked, never applied) instead of applied, as a retry does."""
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-a")
    monkeypatch.setenv("READMODEL_TEST_FAIL_FROM_SEQ", "2")
    events = [
        ("acct-a", "Deposited", {"amount": 5, "seq": 1}),
        ("acct-a", "Deposited", {"amount": 7, "seq": 2}),
        ("acct-a", "Deposited", {"amount": 9, "seq": 3}),
        ("acct-b", "Deposited", {"amount": 1, "seq": 1}),
    ]
    with engine_on(database_for("postgresql"), [Totals()], max_attempts=1) as (log, store, engine):
        log_events(log, events, source="bank")
        engine.catch_up(deadline=30)
        with log.engine.connect() as conn:
            query = sa.select(account_totals.c.account, account_totals.c.total)
            assert {account: total for account, total in conn.execute(query)} == {
                "acct-a": 5,
                "acct-b": 1,
            }
        parked = sorted(store.parked("totals"), key=lambda p: p.position)
        assert [(p.position, p.reason.startswith("held")) for p in parked] == [
            (2, False),
            (3, True),
        ]
