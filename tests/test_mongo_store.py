"""Read models as MongoDB documents (projections/mongo_store.py) on a real MongoDB-wire
server: effects exactly once and in order per aggregate, also with two engines applying the
same lanes at once; poison parked, held, retried and skipped; refused writes; the cache
journal; a SIGKILLed worker process."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from config import load_settings
from outbox.log import EventLog
from outbox.mongo_connection import mongo_database
from projections.api import Event, Projection, on
from projections.engine import EngineHooks, ProjectionEngine, RetryLater
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.query_reader import QueryError
from projections.store import BatchResult, HandlerFailed, Lane
from tests.cli_helpers import DOC_TOTALS, docs_config
from tests.document_fixtures import DocTotals, refuse_taken_codes
from tests.projection_fixtures import append_events, log_events

READMODEL = Path(sys.executable).with_name("readmodel")


def _deposits(n: int, accounts: int, seed: int = 5) -> list[tuple[str, str, dict[str, Any]]]:
    rng = random.Random(seed)
    seqs = [0] * accounts
    events = []
    for _ in range(n):
        account = rng.randrange(accounts)
        seqs[account] += 1
        events.append(
            (f"acct-{account}", "Deposited", {"amount": rng.randint(1, 100), "seq": seqs[account]})
        )
    return events


def _expected(events: list[tuple[str, str, dict[str, Any]]]) -> dict[str, tuple[int, int, int]]:
    totals: dict[str, tuple[int, int, int]] = {}
    for account, _, payload in events:
        count, total, _ = totals.get(account, (0, 0, 0))
        totals[account] = (count + 1, total + payload["amount"], payload["seq"])
    return totals


@pytest.fixture
def docs(
    pg_database: Callable[[], str], mongo_database: Callable[[], str]
) -> Iterator[tuple[EventLog, MongoStore, str]]:
    log = EventLog(pg_database())
    log.create_tables()
    url = mongo_database()
    store = MongoStore(url)
    store.create_tables([DocTotals()])
    yield log, store, url
    store.close()
    log.close()


def _engine(log: EventLog, store: MongoStore, **options: Any) -> ProjectionEngine:
    return ProjectionEngine(LogReader(log), [DocTotals()], {"docs": store}, **options)


def _applied(store: MongoStore) -> int:
    return sum(store.checkpoints("doc_totals").values())


def _documents(store: MongoStore) -> dict[str, tuple[int, int, int]]:
    found = store.database["doc_totals"].find()
    assert all(d["violations"] == 0 for d in store.database["doc_totals"].find())
    return {d["_id"]: (d["events"], d["total"], d["last_seq"]) for d in found}


def test_batches_apply_once_in_order_and_a_rerun_changes_nothing(
    docs: tuple[EventLog, MongoStore, str],
) -> None:
    log, store, _ = docs
    events = _deposits(1500, 30)
    head = log_events(log, events, source="bank", aggregate_type="account")
    engine = _engine(log, store, batch_size=97)
    try:
        assert engine.catch_up() == 1500
        assert _documents(store) == _expected(events)
        assert sum(store.checkpoints("doc_totals").values()) == head * 4  # every lane at head
        assert engine.catch_up() == 0  # applied once: a redelivery finds the lanes done

        more = _deposits(300, 30, seed=9)
        seqs = {account: seq for account, (_, _, seq) in _expected(events).items()}
        shifted = []
        for account, kind, payload in more:
            seqs[account] = seqs.get(account, 0) + 1
            shifted.append((account, kind, {**payload, "seq": seqs[account]}))
        append_events(log, shifted, source="bank", aggregate_type="account", after=head)
        assert engine.catch_up() == 300
        assert _documents(store) == _expected(events + shifted)
    finally:
        engine.close()


def test_two_engines_applying_the_same_lanes_at_once_apply_each_event_once(
    docs: tuple[EventLog, MongoStore, str],
) -> None:
    """Two engines apply the same lanes: where their transactions meet (the same documents,
    the lane's checkpoint, moved only from the position each read), one is aborted, retried,
    and finds the batch done."""
    log, store, url = docs
    events = _deposits(3000, 12)
    log_events(log, events, source="bank", aggregate_type="account")
    engines = [_engine(log, store, batch_size=50), _engine(log, MongoStore(url), batch_size=50)]
    both_applied = threading.Barrier(2, timeout=90)

    class MeetAfterFirstBatch(EngineHooks):
        """Each engine waits, after its first batch that applied events, for the other to
        have applied one too: however the threads are scheduled, both do part of the work."""

        met = False

        def after_batch(self, lane: Lane, result: BatchResult, seconds: float) -> None:
            if result.applied and not self.met:
                self.met = True
                both_applied.wait()

    for engine in engines:
        engine.hooks = MeetAfterFirstBatch()
    applied: list[int] = []
    errors: list[BaseException] = []

    def run(engine: ProjectionEngine) -> None:
        try:
            applied.append(engine.catch_up())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        assert sum(applied) == 3000 and min(applied) > 0, applied  # both did part of it
        assert _documents(store) == _expected(events)
    finally:
        for engine in engines:
            engine.close()


def test_a_failing_event_is_parked_its_aggregate_held_and_retried_or_skipped(
    docs: tuple[EventLog, MongoStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, store, _ = docs
    events = _deposits(400, 8)
    log_events(log, events, source="bank", aggregate_type="account")
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-3")
    monkeypatch.setenv("READMODEL_TEST_FAIL_FROM_SEQ", "10")
    engine = _engine(log, store, batch_size=64, max_attempts=2, retry_backoff=0)
    try:
        with pytest.raises(RetryLater):
            for lane in engine.lanes(engine.projection("doc_totals")):
                engine.process(lane, 400)
        engine.catch_up()
        parked = store.parked("doc_totals")
        held_count = sum(1 for a, _, p in events if a == "acct-3" and p["seq"] >= 10)
        assert len(parked) == held_count
        first = parked[0]
        assert (first.aggregate_id, first.attempts) == ("acct-3", 2)
        assert "handler failed 2 times: RuntimeError('refusing acct-3')" in first.reason
        assert all("held: an earlier event" in p.reason for p in parked[1:])
        got = _documents(store)
        want = _expected(events)
        assert got["acct-3"] == _expected([e for e in events if e[0] == "acct-3"][:9])["acct-3"]
        assert {k: v for k, v in got.items() if k != "acct-3"} == {
            k: v for k, v in want.items() if k != "acct-3"
        }

        with pytest.raises(HandlerFailed, match="refusing acct-3"):
            engine.retry(parked[0])
        again = store.parked("doc_totals")
        assert again[0].attempts == 3 and "failed again on retry" in again[0].reason

        monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
        assert engine.retry(store.parked("doc_totals")[0]) == held_count
        assert store.parked("doc_totals") == []
        assert _documents(store) == want
        assert {p.status for p in store.parked("doc_totals", status=None)} == {"retried"}
    finally:
        engine.close()


def test_skipping_the_last_parked_event_releases_its_aggregate(
    docs: tuple[EventLog, MongoStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, store, _ = docs
    head = log_events(
        log,
        [("a", "Deposited", {"amount": 5, "seq": 1}), ("b", "Deposited", {"amount": 7, "seq": 1})],
        source="bank",
        aggregate_type="account",
    )
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "a")
    engine = _engine(log, store, max_attempts=1, retry_backoff=0)
    try:
        engine.catch_up()
        (entry,) = store.parked("doc_totals")
        skipped = store.skip_parked(entry.id)
        assert skipped is not None and skipped.status == "skipped"
        assert store.skip_parked(entry.id) is None  # not parked any more
        append_events(
            log, [("a", "Deposited", {"amount": 1, "seq": 2})], "bank", "account", after=head
        )
        monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
        engine.catch_up()
        doc = store.database["doc_totals"].find_one({"_id": "a"})
        assert doc is not None and (doc["events"], doc["total"]) == (1, 1)  # flows again
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("poison", "reason"),
    [
        ({"tags": ["x", "y"]}, "InvalidDocument"),  # a set: BSON cannot hold it
        ({"dollar": True}, "cannot start with '$'"),  # a top-level field name starting with $
        ({"taken": True}, "duplicate key"),  # refused by the server when the batch is written
    ],
    ids=["set", "dollar-field", "taken-code"],
)
def test_a_document_the_driver_refuses_parks_only_its_event(
    docs: tuple[EventLog, MongoStore, str], poison: dict[str, Any], reason: str
) -> None:
    log, store, _ = docs
    refuse_taken_codes(store.database, "doc_totals")
    events = _deposits(200, 5)
    poisoned = [
        (a, k, {**p, **poison}) if i == 77 else (a, k, p) for i, (a, k, p) in enumerate(events)
    ]
    log_events(log, poisoned, source="bank", aggregate_type="account")
    engine = _engine(log, store, max_attempts=2, retry_backoff=0)
    try:
        engine.catch_up()
        parked = store.parked("doc_totals")
        assert parked[0].position == 78
        assert reason in parked[0].reason, parked[0].reason
        poisoned_account = events[77][0]
        assert {p.aggregate_id for p in parked} == {poisoned_account}
        got = _documents(store)
        want = _expected(events)
        for account, totals in want.items():
            if account != poisoned_account:
                assert got[account] == totals
        assert got[poisoned_account][2] == events[77][2]["seq"] - 1
    finally:
        engine.close()


def test_batches_journal_their_cache_tags_until_forgotten(
    docs: tuple[EventLog, MongoStore, str],
) -> None:
    log, store, _ = docs
    log_events(
        log,
        [("a", "Deposited", {"amount": 1, "seq": 1}), ("b", "Deposited", {"amount": 2, "seq": 1})],
        source="bank",
        aggregate_type="account",
    )
    store.journal_invalidations = True
    engine = _engine(log, store)  # no cache attached: the journal keeps the tags
    try:
        engine.catch_up()
        pending = store.pending_invalidations()
        assert sorted(tag for entry in pending for tag in entry.tags) == [
            "account:a",
            "account:b",
        ]
        assert all(entry.projection == "doc_totals" for entry in pending)
        assert store.pending_invalidations(older_than=60) == []
        store.forget_invalidations([entry.id for entry in pending])
        assert store.pending_invalidations() == []
    finally:
        engine.close()


@pytest.mark.chaos
def test_a_sigkilled_worker_loses_nothing_and_applies_nothing_twice(
    docs: tuple[EventLog, MongoStore, str], tmp_path: Path
) -> None:
    log, store, url = docs
    events = _deposits(20_000, 40)
    log_events(log, events, source="bank", aggregate_type="account")
    config = docs_config(tmp_path, log, url, engine={"batch_size": 200})
    load_settings(config)  # a config error would only show as a failed subprocess
    kills = 0
    rng = random.Random(3)
    # A process killed inside a transaction leaves it open until the server drops it (60 s):
    # the next process waits for it, so each such kill can cost a minute (hence two kills).
    deadline = time.monotonic() + 300
    while True:
        output = tmp_path / f"run-{kills}.log"
        with output.open("wb") as out:
            process = subprocess.Popen(
                [str(READMODEL), "run", "--until-caught-up", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if kills < 2:
            # Kill it while it applies: once its lanes have moved, after a random moment.
            start = _applied(store)
            while process.poll() is None and _applied(store) == start:
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.4))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills += 1
                continue
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"the worker did not catch up in time:\n{output.read_text()}")
        assert process.returncode == 0, output.read_text(errors="replace")
        break
    assert kills == 2, "the worker finished before it could be killed twice"
    assert _documents(store) == _expected(events)
    client: MongoClient[dict[str, Any]] = MongoClient(url)
    try:
        positions = client[mongo_database(url)]["rm_checkpoints"].distinct("position")
    finally:
        client.close()
    assert positions == [20_000]


def test_documents_are_read_by_id_in_pages_and_through_the_cache(
    docs: tuple[EventLog, MongoStore, str],
    private_redis: Callable[[], Any],
    tmp_path: Path,
) -> None:
    from projections.query_service import Queries
    from projections.redis_cache import RedisCache

    log, store, url = docs
    events = _deposits(60, 7)
    head = log_events(log, events, source="bank", aggregate_type="account")
    private_redis()
    cache = RedisCache(private_redis.url)  # type: ignore[attr-defined]
    engine = ProjectionEngine(LogReader(log), [DocTotals()], {"docs": store}, cache=cache)
    queries = Queries.from_engine(engine, log.engine)
    try:
        engine.catch_up()
        want = _expected(events)
        got = queries.get("doc_totals", "acct-2").value
        assert got is not None and (got["events"], got["total"]) == want["acct-2"][:2]
        assert queries.get("doc_totals", "nobody").value is None

        pages, after = [], None
        while True:
            page = queries.list("doc_totals", {"violations": 0}, after=after, limit=3)
            pages.append([d["_id"] for d in page.rows])
            if page.next is None:
                break
            after = page.next
        assert [i for p in pages for i in p] == sorted(want) and len(pages) == 3

        # The cached copy is invalidated when a batch changes the document.
        assert queries.get("doc_totals", "acct-2").value == got
        seq = want["acct-2"][2] + 1
        append_events(
            log,
            [("acct-2", "Deposited", {"amount": 1000, "seq": seq})],
            "bank",
            "account",
            after=head,
        )
        engine.catch_up()
        fresh = queries.get("doc_totals", "acct-2").value
        assert fresh is not None and fresh["total"] == got["total"] + 1000

        with pytest.raises(QueryError, match="no collection 'other'"):
            queries.get("doc_totals", "acct-2", table="other")
        with pytest.raises(QueryError, match="keeps no tenant column: read it without one"):
            queries.get("doc_totals", "acct-2", tenant="acme")
    finally:
        queries.close()
        engine.close()
        cache.close()


def test_readmodel_query_reads_a_document(
    docs: tuple[EventLog, MongoStore, str], tmp_path: Path
) -> None:
    from tests.cli_helpers import run_cli

    log, store, url = docs
    log_events(
        log, [("a", "Deposited", {"amount": 5, "seq": 1})], source="bank", aggregate_type="account"
    )
    engine = _engine(log, store)
    try:
        engine.catch_up()
    finally:
        engine.close()
    config = docs_config(tmp_path, log, url)
    result = run_cli(["query", "doc_totals", "a", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output.splitlines()[-1])["row"]
    assert (row["_id"], row["events"], row["total"]) == ("a", 1, 5)


class Daily(Projection):
    """Deposits per account and day, keyed by a compound ``_id``."""

    name = "daily"
    store = "docs"
    collections = ("daily",)

    @on("bank", "Deposited")
    def deposited(self, event: Event[dict], tx: Any) -> None:
        key = {"account": event.aggregate_id, "day": event.payload["seq"] % 2}
        doc = tx.get("daily", key) or {"_id": key, "n": 0}
        doc["n"] += 1
        tx.upsert("daily", doc)


def test_documents_with_a_compound_id_are_read_back_within_the_batch(
    pg_database: Callable[[], str], mongo_database: Callable[[], str]
) -> None:
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    store.create_tables([Daily()])
    events = _deposits(100, 3)
    log_events(log, events, source="bank", aggregate_type="account")
    engine = ProjectionEngine(LogReader(log), [Daily()], {"docs": store})
    try:
        assert engine.catch_up() == 100
        got = {(d["_id"]["account"], d["_id"]["day"]): d["n"] for d in store.database.daily.find()}
    finally:
        engine.close()
        log.close()
    want: dict[tuple[str, int], int] = {}
    for account, _, payload in events:
        want[(account, payload["seq"] % 2)] = want.get((account, payload["seq"] % 2), 0) + 1
    assert got == want


def test_blocking_an_event_twice_keeps_the_first_block_at_once(
    docs: tuple[EventLog, MongoStore, str],
) -> None:
    """Two workers reaching max_attempts on one event both block it; the second must not
    abort its transaction on a duplicate key and wait out conflict_wait."""
    log, store, _ = docs
    log_events(log, [("a", "Deposited", {"amount": 1, "seq": 1})], "bank", "account")
    (event,) = LogReader(log).at_positions("bank", [1])
    lane = Lane("doc_totals", "bank", 0)
    store.conflict_wait = 5
    assert store.block(lane, event, "first", "detail", 3)
    started = time.monotonic()
    assert store.block(lane, event, "second", "detail", 4)
    assert time.monotonic() - started < 2
    (blocked,) = store.database["rm_blocked_aggregates"].find()
    assert (blocked["reason"], blocked["attempts"]) == ("first", 3)


def test_a_store_refuses_projections_of_the_other_kind(
    docs: tuple[EventLog, MongoStore, str], pg_database: Callable[[], str]
) -> None:
    from outbox.errors import StoreError
    from projections.sql_store import SqlStore
    from tests.projection_fixtures import Totals

    _, store, _ = docs
    with pytest.raises(StoreError, match="keeps tables, not collections"):
        store.create_tables([Totals()])
    sql = SqlStore(pg_database())
    try:
        with pytest.raises(StoreError, match="must be a MongoDB store"):
            sql.create_tables([DocTotals()])
    finally:
        sql.close()


def test_workers_starting_together_create_the_collections_once_without_failing(
    mongo_database: Callable[[], str],
) -> None:
    """Worker processes of one deployment start at once: each lists the collections, then
    creates those it did not see, which another one may have created in between."""
    for _ in range(5):
        url = mongo_database()
        stores = [MongoStore(url) for _ in range(6)]
        start = threading.Barrier(len(stores))
        errors: list[BaseException] = []

        def create(
            store: MongoStore, start: threading.Barrier = start, errors: list[Any] = errors
        ) -> None:
            start.wait()
            try:
                store.create_tables([DocTotals()])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=create, args=(store,)) for store in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        names = set(stores[0].database.list_collection_names())
        for store in stores:
            store.close()
        assert errors == []
        assert {"doc_totals", "rm_checkpoints", "rm_parked_events"} <= names


def test_a_document_projection_declares_the_indexes_of_its_collections(
    docs: tuple[EventLog, MongoStore, str],
) -> None:
    from outbox.errors import StoreError

    class Indexed(DocTotals):
        collection_indexes = {"doc_totals": ["last_seq", ("violations", "total")]}

    class Misplaced(DocTotals):
        collection_indexes = {"elsewhere": ["last_seq"]}

    _, store, _ = docs
    for _ in range(2):  # idempotent
        store.create_tables([Indexed()])
    keys = [tuple(i["key"]) for i in store.database["doc_totals"].index_information().values()]
    assert sorted(keys) == [
        (("_id", 1),),
        (("last_seq", 1),),
        (("violations", 1), ("total", 1)),
    ]
    with pytest.raises(StoreError, match="indexes on 'elsewhere', which is not one of its"):
        store.create_tables([Misplaced()])


def _index_keys(store: MongoStore, collection: str) -> list[tuple[tuple[str, int], ...]]:
    return sorted(tuple(i["key"]) for i in store.database[collection].index_information().values())


def test_a_tenant_projections_collections_are_indexed_by_tenant_and_id(
    docs: tuple[EventLog, MongoStore, str],
) -> None:
    """Every read and write of a tenant collection is limited to one tenant and lists go by
    ``_id``: the store indexes ``(tenant, _id)`` without being asked, also on a collection
    made before (a worker's start adds it); not on a collection every tenant shares."""
    from tests.document_query_fixtures import DocAccounts

    _, store, _ = docs
    store.database["doc_accounts"].insert_one({"_id": "a0", "tenant": "acme"})
    assert _index_keys(store, "doc_accounts") == [(("_id", 1),)]
    for _ in range(2):  # idempotent
        store.create_tables([DocAccounts()])
    assert _index_keys(store, "doc_accounts") == [
        (("_id", 1),),
        (("tenant", 1), ("_id", 1)),
        (("tenant", 1), ("owner", 1)),  # declared in collection_indexes
    ]
    assert _index_keys(store, "doc_currencies") == [(("_id", 1),)]


def test_a_worker_starts_beside_a_tenant_index_made_by_hand(
    docs: tuple[EventLog, MongoStore, str],
) -> None:
    """A ``(tenant, _id)`` index made by hand before the store made its own serves as it is,
    whatever its name; one in the way of the store's (its name on other keys) is logged,
    naming the collection and that index, and the worker starts without the tenant index."""
    from structlog.testing import capture_logs

    from tests.document_query_fixtures import DocAccounts

    _, store, _ = docs
    accounts = store.database["doc_accounts"]
    accounts.create_index([("tenant", 1), ("_id", 1)], name="by_tenant")
    with capture_logs() as logs:
        store.create_tables([DocAccounts()])
    assert sorted(accounts.index_information()) == ["_id_", "by_tenant", "tenant_1_owner_1"]
    assert [log for log in logs if log["log_level"] == "warning"] == []

    accounts.drop_index("by_tenant")
    accounts.create_index([("tenant", 1), ("owner", -1)], name="tenant_1__id_1")
    with capture_logs() as logs:
        store.create_tables([DocAccounts()])
    assert _index_keys(store, "doc_accounts") == [
        (("_id", 1),),
        (("tenant", 1), ("owner", -1)),
        (("tenant", 1), ("owner", 1)),
    ]
    [warning] = [log for log in logs if log["log_level"] == "warning"]
    assert warning["event"] == "tenant index not created: an existing index is in its way"
    assert warning["collection"] == "doc_accounts"
    assert warning["existing"] == ["tenant_1__id_1 (tenant: 1, owner: -1)"]


def test_parked_events_of_two_stores_sharing_a_number_are_told_apart(
    docs: tuple[EventLog, MongoStore, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from projections.sql_store import SqlStore
    from tests.cli_helpers import run_cli
    from tests.projection_fixtures import Totals

    log, store, url = docs
    log_events(log, [("a", "Deposited", {"amount": 1, "seq": 1})], "bank", "account")
    sql = SqlStore(log.engine.url.render_as_string(hide_password=False), engine=log.engine)
    sql.create_tables([Totals()])
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "a")
    engine = ProjectionEngine(
        LogReader(log),
        [Totals(), DocTotals()],
        {"default": sql, "docs": store},
        max_attempts=1,
        retry_backoff=0,
    )
    try:
        engine.catch_up()
    finally:
        engine.close()
    config = docs_config(
        tmp_path, log, url, projections=["tests.projection_fixtures:Totals", DOC_TOTALS]
    )
    listed = run_cli(["parked", "list", "--json", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    refs = sorted(e["ref"] for e in json.loads(listed.output[listed.output.index("[") :]))
    assert refs == ["e1@doc_totals", "e1@totals"]
    ambiguous = run_cli(["parked", "skip", "e1", "--config", str(config)])
    assert ambiguous.exit_code != 0 and "give one of e1@doc_totals, e1@totals" in ambiguous.output
    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
    skipped = run_cli(["parked", "skip", "e1@doc_totals", "--config", str(config)])
    assert skipped.exit_code == 0, skipped.output
    again = MongoStore(url)  # the engine closed the fixture's store
    try:
        assert [p.status for p in again.parked("doc_totals", None)] == ["skipped"]
    finally:
        again.close()
    totals = SqlStore(log.engine.url.render_as_string(hide_password=False))
    try:
        assert [(p.projection, p.status) for p in totals.parked(None)] == [("totals", "parked")]
    finally:
        totals.close()


def test_status_and_a_consistency_wait_name_a_failing_handler_before_it_is_parked(
    docs: tuple[EventLog, MongoStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from projections.consistency import ConsistencyTimeout
    from projections.query_service import Queries
    from projections.status import projection_statuses

    log, store, _ = docs
    log_events(log, [("a", "Deposited", {"amount": 1, "seq": 1})], "bank", "account")
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "a")
    engine = _engine(log, store, max_attempts=50, retry_backoff=0)
    queries = Queries.from_engine(engine, log.engine)
    try:
        with pytest.raises(RetryLater):
            engine.catch_up(deadline=0)
        (status,) = projection_statuses(engine)
        assert status.last_error is not None and "refusing a" in status.last_error
        assert status.last_error_source == "bank"
        with pytest.raises(ConsistencyTimeout, match="refusing a"):
            queries.get("doc_totals", "a", wait_for="bank:1", timeout=0.2)
    finally:
        queries.close()
        engine.close()


@pytest.mark.chaos
def test_a_worker_killed_between_its_checkpoint_and_its_commit_loses_nothing(
    docs: tuple[EventLog, MongoStore, str],
) -> None:
    """The checkpoint moves inside the batch's transaction: a worker SIGKILLed right after
    moving it (before the commit) leaves neither the checkpoint nor the documents; the next
    worker waits until the server drops the open transaction (60 s), then applies the batch."""
    log, store, url = docs
    events = _deposits(400, 8)
    log_events(log, events, source="bank", aggregate_type="account")
    log_url = log.engine.url.render_as_string(hide_password=False)
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.mongo_kill_child", log_url, url],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().decode()
        assert line.strip() == "checkpointed", line + child.stdout.read().decode()
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert _applied(store) == 0  # nothing the killed worker did is visible
    engine = _engine(log, store)
    try:
        assert engine.catch_up() == 400
    finally:
        engine.close()
    again = MongoStore(url)
    try:
        assert _documents(again) == _expected(events)
        assert set(again.checkpoints("doc_totals").values()) == {400}
    finally:
        again.close()


def test_handler_failures_are_indexed_for_the_queries_that_read_them(
    docs: tuple[EventLog, MongoStore, str],
) -> None:
    """``failing`` (status, a consistency wait) reads the failures of a projection, one
    source and a span of positions, by position: without an index each read scanned every
    failure of every projection."""
    from outbox.envelope import Envelope

    _, store, _ = docs
    for projection in ("doc_totals", "other"):
        for source in ("bank", "shop"):
            lane = Lane(projection, source, 0)
            for position in range(1, 21):
                event = Envelope(
                    event_id=f"{source}-{position}",
                    source=source,
                    aggregate_type="account",
                    aggregate_id="a",
                    event_type="Deposited",
                    payload={},
                    position=position,
                )
                store.record_failure(lane, event, "boom")
    found = store.failing("doc_totals", "bank", after=4, upto=9)
    assert [(f["source"], f["position"], f["attempts"]) for f in found] == [
        ("bank", p, 1) for p in range(5, 10)
    ]
    failures = store.database["rm_handler_failures"]
    keys = [list(index["key"]) for index in failures.index_information().values()]
    assert [("projection", 1), ("source", 1), ("position", 1)] in keys
    query = {"projection": "doc_totals", "source": "bank", "position": {"$gt": 4, "$lte": 9}}
    plan = failures.find(query).sort("position", 1).explain()
    assert "IXSCAN" in json.dumps(plan["queryPlanner"]["winningPlan"], default=str)
    assert plan["executionStats"]["totalDocsExamined"] == 5
