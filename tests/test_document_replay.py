"""``readmodel replay`` of document projections (a MongoDB store, projections/document_replay.py)
on a real MongoDB-wire server: rebuilds equal to a clean build, readers that never miss a
document while live batches race the swap, interrupted rebuilds, the replay lease, strict
and skipping handlers, cache invalidation, in-place replays and the CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from outbox.errors import StoreError
from projections.cache import MemoryCache
from projections.document_generations import GENERATIONS, collections_at, generation_of
from projections.document_reader import DocumentReader
from projections.document_replay import DocumentReplayer
from projections.engine import ProjectionEngine
from projections.invalidations import WHOLE_PROJECTION
from projections.log_reader import LogReader
from projections.mongo_store import CHECKPOINTS, MongoStore
from projections.query_service import Queries
from projections.replay_lock import REPLAY_LOCKS, replay_lock
from projections.replay_types import (
    ReplayError,
    ReplayHooks,
    ReplayLocked,
    ReplayOptions,
    ReplayRefused,
)
from tests.cli_helpers import docs_config, run_cli, write_config
from tests.document_bank_helpers import Bank, opened
from tests.document_fixtures import DocTotals
from tests.document_query_fixtures import DocAccounts
from tests.document_replay_helpers import PROJECTIONS, Deposits, Docs, deposits, docs, totals
from tests.projection_fixtures import SLOW, append_events

__all__ = ["docs"]  # the fixture


def clean_build(docs: Docs, mongo_database: Callable[[], str], name: str) -> dict[str, Any]:
    """The projection built from the whole log into a fresh database."""
    store = MongoStore(mongo_database())
    try:
        store.create_tables([docs.projections[name]])
        engine = ProjectionEngine(LogReader(docs.log), [docs.projections[name]], {"docs": store})
        try:
            engine.catch_up()
            return docs.documents(name, store)
        finally:
            engine.close()
    finally:
        store.close()


# -- blue/green ------------------------------------------------------------------------


def test_the_next_generation_has_the_indexes_the_projection_declares(docs: Docs) -> None:
    class Indexed(DocTotals):
        collection_indexes = {"doc_totals": ["last_seq", ("violations", "total")]}

    docs.projections["doc_totals"] = Indexed()
    docs.store.create_tables([Indexed()])
    docs.engine = docs.engine_on(docs.store)
    docs.feed(deposits(100, 5, seed=6))
    docs.replayer().run(ReplayOptions())
    database = docs.store.database
    assert generation_of(database, "doc_totals") == 1
    keys = sorted(tuple(i["key"]) for i in database["doc_totals__g1"].index_information().values())
    assert keys == [(("_id", 1),), (("last_seq", 1),), (("violations", 1), ("total", 1))]


def test_a_rebuilt_tenant_collection_is_indexed_by_tenant_and_id_without_a_warning(
    bank: Bank,
) -> None:
    bank.append([opened("acme", "a1", "ann"), opened("globex", "g1", "bob")])
    replayer = DocumentReplayer(LogReader(bank.log), DocAccounts(), bank.store, retire_after=0.0)
    assert replayer.plan(ReplayOptions()).warnings == []  # the tenant index is the store's own
    replayer.run(ReplayOptions())
    database = bank.store.database
    assert generation_of(database, "doc_accounts") == 1

    def keys(collection: str) -> list[tuple[tuple[str, int], ...]]:
        return sorted(tuple(i["key"]) for i in database[collection].index_information().values())

    assert keys("doc_accounts__g1") == [
        (("_id", 1),),
        (("tenant", 1), ("_id", 1)),
        (("tenant", 1), ("owner", 1)),
    ]
    assert keys("doc_currencies__g1") == [(("_id", 1),)]  # shared: no tenant
    assert [d["_id"] for d in bank.queries.list("doc_accounts", {}, tenant="globex").rows] == ["g1"]


def test_a_rebuild_of_a_group_reads_every_member_including_one_logged_meanwhile(
    docs: Docs, mongo_database: Callable[[], str]
) -> None:
    """``@on("bank", ...)`` reads the member sources ``bank:<tenant>``; a member whose first
    events are logged (and applied live, to the old generation) just before the swap is in
    the new generation too, and its lanes go on from there."""
    heads = {"bank:a": 0, "bank:b": 0}

    def feed(source: str, events: Deposits) -> None:
        heads[source] = append_events(
            docs.log, events, source=source, aggregate_type="account", after=heads.get(source, 0)
        )
        docs.engine.catch_up()

    seqs: dict[str, int] = {}
    first = deposits(200, 10, seed=3, seqs=seqs)
    feed("bank:a", first[:120])
    feed("bank:b", first[120:])
    later = deposits(30, 10, seed=4, seqs=seqs)

    class NewMember(ReplayHooks):
        def before_swap(self) -> None:
            feed("bank:c", later)

    summary = docs.replayer(hooks=NewMember(), batch=50).run(ReplayOptions())
    assert summary.applied == {"bank:a": 120, "bank:b": 80, "bank:c": 30}
    assert docs.totals() == totals(first + later)
    assert docs.documents() == clean_build(docs, mongo_database, "doc_totals")
    assert {(s, p): cp for (s, p), cp in docs.checkpoints().items()} == {
        (source, p): head for source, head in heads.items() for p in range(4)
    }
    more = deposits(10, 10, seed=5, seqs=seqs)
    feed("bank:c", more)
    assert docs.totals() == totals(first + later + more)


def test_rebuild_repairs_the_model_equals_a_clean_build_and_drops_the_old_generation(
    docs: Docs, mongo_database: Callable[[], str]
) -> None:
    events = deposits(1200, 25, seed=1)
    docs.feed(events)
    database = docs.store.database
    database["doc_totals"].update_many({}, {"$set": {"total": -1}})
    database["doc_totals"].delete_one({"_id": "acct-3"})
    database["doc_totals"].insert_one({"_id": "stray", "events": 0})
    database["doc_deposits"].delete_many({"_id": {"$lt": 100}})
    checkpoints = docs.checkpoints()

    plan = docs.replayer().plan(ReplayOptions())
    assert (plan.unit, plan.tables, plan.leftovers) == (
        "collection",
        [("doc_totals", "doc_totals__g1")],
        [],
    )
    summary = docs.replayer(batch=400).run(ReplayOptions())
    assert summary.events == 1200 and summary.checkpoints == {"bank": docs.head}
    assert generation_of(database, "doc_totals") == 1
    assert docs.totals() == totals(events)
    assert docs.documents() == clean_build(docs, mongo_database, "doc_totals")
    assert docs.checkpoints() == checkpoints
    names = docs.collection_names()
    assert "doc_totals__g1" in names and "doc_totals" not in names  # the old one is dropped
    assert not any(n.startswith("doc_totals__rebuild") for n in names)
    assert database[CHECKPOINTS].count_documents({"projection": "doc_totals__rebuild"}) == 0

    # Live batches go to the new generation; a second rebuild moves on to the next one.
    more = deposits(300, 30, seed=2, seqs={a: s for a, (_, _, s) in totals(events).items()})
    docs.feed(more)
    assert docs.totals() == totals(events + more)
    docs.replayer("doc_last_deposit", batch=250).run(ReplayOptions())  # two collections
    assert docs.documents("doc_last_deposit") == clean_build(
        docs, mongo_database, "doc_last_deposit"
    )
    assert {"doc_last_deposit__g1", "doc_deposits__g1"} <= docs.collection_names()
    docs.replayer().run(ReplayOptions())
    assert generation_of(database, "doc_totals") == 2
    assert docs.totals() == totals(events + more)
    assert "doc_totals__g1" not in docs.collection_names()

    # The replay drops the old generation retire_after seconds after the swap.
    started = time.monotonic()
    docs.replayer(retire_after=1.0).run(ReplayOptions())
    assert time.monotonic() - started >= 1.0
    assert generation_of(database, "doc_totals") == 3
    assert "doc_totals__g2" not in docs.collection_names()
    assert database[GENERATIONS].find_one({"_id": "doc_totals"}).get("retired") == {}

    # Interrupted while it waited: the old generation is kept until retire_after has passed.
    database["doc_totals__g2"].insert_one({"_id": "old"})
    database[GENERATIONS].update_one(
        {"_id": "doc_totals"}, {"$set": {"retired.g2": datetime.now(UTC)}}
    )
    keeping = docs.replayer(retire_after=60)
    assert keeping.plan(ReplayOptions()).leftovers == []
    assert keeping.cleanup() == [] and keeping.kept == ["doc_totals__g2"]
    assert docs.replayer().cleanup() == ["doc_totals__g2"]
    assert database[GENERATIONS].find_one({"_id": "doc_totals"}).get("retired") == {}
    assert docs.totals() == totals(events + more)

    # A store opened afterwards (a worker starting) creates no stale generation-0 collection.
    starting = MongoStore(docs.url)
    starting.create_tables(list(docs.projections.values()))
    starting.close()
    assert "doc_totals" not in docs.collection_names()


class LiveWorker:
    """Appends deposits to the log in small chunks and applies them with its own engine
    (and its own MongoDB client), in a thread, while the rebuild runs."""

    def __init__(self, docs: Docs, seqs: dict[str, int], chunks: int) -> None:
        self.docs = docs
        self.engine = docs.engine_on(MongoStore(docs.url))
        self.events: Deposits = []
        self.seqs = seqs
        self.chunks = chunks
        self.done_chunks = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            for chunk in range(self.chunks):
                events = deposits(25, 45, seed=100 + chunk, seqs=self.seqs)
                self.docs.feed(events, apply=False)
                self.events += events
                self.engine.catch_up()
                self.done_chunks += 1
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def close(self) -> None:
        self.thread.join(timeout=120)
        self.engine.close()


class StartLiveWork(ReplayHooks):
    """Starts the live worker after the first shadow batch; lets the swap start only once
    the worker is half done, so that its batches meet both the rebuild and the swap."""

    def __init__(self, worker: LiveWorker) -> None:
        self.worker = worker
        self.swapping = False

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        if not self.worker.thread.is_alive() and self.worker.done_chunks == 0:
            self.worker.thread.start()

    def before_swap(self) -> None:
        deadline = time.monotonic() + 60
        while self.worker.done_chunks < self.worker.chunks // 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.swapping = True


def test_readers_never_miss_a_document_and_live_batches_reach_the_rebuilt_model(
    docs: Docs,
) -> None:
    first = deposits(3000, 40, seed=3)
    docs.feed(first)
    docs.store.database["doc_totals"].update_many({}, {"$set": {"total": -1}})
    keys = {f"acct-{i}" for i in range(40)}
    reader_store = MongoStore(docs.url)
    queries = Queries([DocTotals()], {"docs": reader_store}, docs.log.engine)
    stop = threading.Event()
    reads: list[int] = []
    problems: list[str] = []

    def read() -> None:
        rng = random.Random(7)
        try:
            while not stop.is_set():
                seen = {d["_id"] for d in queries.list("doc_totals", limit=1000).rows}
                if keys - seen:
                    problems.append(f"missing {sorted(keys - seen)[:3]} after {len(reads)} reads")
                if reads and len(seen) < reads[-1]:
                    problems.append(f"document count dropped from {reads[-1]} to {len(seen)}")
                key = f"acct-{rng.randrange(40)}"
                if queries.get("doc_totals", key).value is None:
                    problems.append(f"get({key!r}) found nothing after {len(reads)} reads")
                reads.append(len(seen))
        except Exception as exc:  # pragma: no cover - reported below
            problems.append(repr(exc))

    seqs = {a: s for a, (_, _, s) in totals(first).items()}
    worker = LiveWorker(docs, seqs, chunks=24)
    hooks = StartLiveWork(worker)
    thread = threading.Thread(target=read)
    thread.start()
    try:
        summary = docs.replayer(hooks=hooks, batch=300, retire_after=1.0).run(ReplayOptions())
    finally:
        worker.close()
        time.sleep(0.2)  # reads of the new generation after the swap
        stop.set()
        thread.join()
        reader_store.close()

    assert worker.errors == [] and worker.done_chunks == 24 and hooks.swapping
    assert problems == []
    assert len(reads) > 5
    all_events = first + worker.events
    docs.engine.catch_up()
    assert docs.totals() == totals(all_events)
    assert summary.events >= len(first)
    assert generation_of(docs.store.database, "doc_totals") == 1
    assert set(docs.checkpoints().values()) == {docs.head}
    assert docs.engine.lagging(["doc_totals"]) == []


class SwapOnFirstRead:
    """A database whose first read of a ``doc_totals`` collection waits for a whole rebuild
    (swap and drop of the old generation) first: the reader resolved the old generation
    just before the swap, and reads it just after."""

    def __init__(self, database: Any, swap: Callable[[], Any]) -> None:
        self.database = database
        self.swap = swap
        self.swapped = False

    def __getitem__(self, name: str) -> Any:
        if name.startswith("doc_totals") and not self.swapped:
            self.swapped = True
            self.swap()
        return self.database[name]


@pytest.mark.parametrize("read", ["get", "page", "find"])
def test_a_read_that_resolved_the_old_generation_just_before_the_swap_reads_again(
    docs: Docs, read: str
) -> None:
    events = deposits(200, 5, seed=18)
    docs.feed(events)
    database = SwapOnFirstRead(docs.store.database, lambda: docs.replayer().run(ReplayOptions()))
    reader = DocumentReader(database, DocTotals())
    if read == "get":
        found = reader.get("doc_totals", "acct-1")
        assert found is not None and found["total"] == totals(events)["acct-1"][1]
    elif read == "find":  # a @query's read
        rows = reader.find("doc_totals", order_by="-_id", limit=2)
        assert [d["_id"] for d in rows] == sorted(totals(events))[::-1][:2]
    else:
        rows = reader.page("doc_totals", {}, after=None, limit=10).rows
        assert [d["_id"] for d in rows] == sorted(totals(events))
    assert database.swapped and "doc_totals" not in docs.collection_names()
    assert generation_of(docs.store.database, "doc_totals") == 1


def test_a_live_batch_that_wrote_before_the_swap_holds_it_back_and_is_taken_over(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live batch has written its documents to the old generation, beyond what the rebuild
    read, when the swap starts: it wrote its lane's checkpoint with them, so the swap waits
    for it to commit (committed on the old generation after the swap, it would be lost),
    then applies its events to the new generation too. (A batch still reading when the swap
    commits is redone on the new generation: tests/test_document_replay_stalls.py.)"""
    first = deposits(400, 6, seed=19)
    docs.feed(first)
    later = deposits(60, 6, seed=20, seqs={a: s for a, (_, _, s) in totals(first).items()})
    live_store = MongoStore(docs.url)
    live = docs.engine_on(live_store)
    paused, resume, swap_tried = threading.Event(), threading.Event(), threading.Event()
    original = MongoStore._set_checkpoint
    lock_lane = MongoStore.lock_lane

    def pause_once(self: MongoStore, *args: Any, **kwargs: Any) -> None:
        if self is live_store and not paused.is_set():
            paused.set()  # the batch's documents are written, its checkpoint not yet moved
            assert resume.wait(60)
        original(self, *args, **kwargs)

    def swap_locks(self: MongoStore, *args: Any, **kwargs: Any) -> int:
        if self is docs.store:
            swap_tried.set()
        return lock_lane(self, *args, **kwargs)

    monkeypatch.setattr(MongoStore, "_set_checkpoint", pause_once)
    monkeypatch.setattr(MongoStore, "lock_lane", swap_locks)
    errors: list[BaseException] = []

    def apply_live() -> None:
        try:
            live.catch_up(["doc_totals"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=apply_live)

    class LiveBatchInFlight(ReplayHooks):
        def before_swap(self) -> None:
            docs.feed(later, apply=False)
            worker.start()
            assert paused.wait(30)

    held_back: list[int] = []

    def resume_once_the_swap_waits() -> None:
        if swap_tried.wait(60):
            time.sleep(1.0)
            held_back.append(generation_of(docs.store.database, "doc_totals"))
        resume.set()

    watcher = threading.Thread(target=resume_once_the_swap_waits)
    watcher.start()
    try:
        summary = docs.replayer(hooks=LiveBatchInFlight(), retire_after=2.0).run(ReplayOptions())
    finally:
        resume.set()
        watcher.join()
        worker.join(timeout=120)
        live.close()
    assert errors == []
    assert held_back == [0]  # the swap waited for the live batch
    assert summary.checkpoints["bank"] == docs.head  # and took its events over
    docs.engine.catch_up()
    assert docs.totals() == totals(first + later)
    assert set(docs.checkpoints().values()) == {docs.head}


class Interrupt(ReplayHooks):
    def __init__(self, after_batches: int) -> None:
        self.after = after_batches
        self.batches = 0

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        self.batches += 1
        if self.batches == self.after:
            raise KeyboardInterrupt


def test_an_interrupted_rebuild_leaves_the_live_model_and_cleanup_removes_the_shadow(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = deposits(1500, 20, seed=4)
    docs.feed(events)
    docs.store.database["doc_totals"].update_many({}, {"$set": {"total": 7}})
    before, checkpoints = docs.documents(), docs.checkpoints()

    with pytest.raises(KeyboardInterrupt):
        docs.replayer(hooks=Interrupt(after_batches=2), batch=300).run(ReplayOptions())
    assert docs.documents() == before and docs.checkpoints() == checkpoints
    assert generation_of(docs.store.database, "doc_totals") == 0
    assert "doc_totals__g1" in docs.collection_names()
    assert docs.replayer().plan(ReplayOptions()).leftovers == ["doc_totals__g1"]
    assert docs.replayer().cleanup() == ["doc_totals__g1"]
    assert "doc_totals__g1" not in docs.collection_names()
    assert (
        docs.store.database[CHECKPOINTS].count_documents({"projection": "doc_totals__rebuild"}) == 0
    )

    # Interrupted inside the swap transaction, after the generation moved: nothing changed.
    replayer = docs.replayer()
    settle = replayer._settle_parked

    def settle_then_die(session: Any) -> int:
        settle(session)
        raise KeyboardInterrupt

    monkeypatch.setattr(replayer, "_settle_parked", settle_then_die)
    with pytest.raises(KeyboardInterrupt):
        replayer.run(ReplayOptions())
    assert docs.documents() == before and docs.checkpoints() == checkpoints
    assert generation_of(docs.store.database, "doc_totals") == 0

    # The next replay drops the leftover shadow itself and succeeds.
    docs.replayer().run(ReplayOptions())
    assert docs.totals() == totals(events)
    assert generation_of(docs.store.database, "doc_totals") == 1


def test_a_second_replay_of_the_same_projection_is_refused(docs: Docs) -> None:
    docs.feed(deposits(60, 5, seed=5))
    with replay_lock(docs.store, "doc_totals"):
        with pytest.raises(ReplayLocked, match="another replay of 'doc_totals' is running"):
            docs.replayer().run(ReplayOptions())
        with pytest.raises(ReplayLocked):
            docs.replayer().cleanup()
        docs.replayer("doc_last_deposit").run(ReplayOptions())  # another projection may
    docs.replayer().run(ReplayOptions())  # released on exit

    # The lease of a replay that died is taken over once it has expired.
    locks = docs.store.database[REPLAY_LOCKS]
    past = datetime.now(UTC) - timedelta(seconds=1)
    locks.insert_one({"_id": "doc_totals", "owner": "dead", "holder": "h:1", "expires_at": past})
    docs.replayer().run(ReplayOptions())
    assert locks.count_documents({}) == 0


def test_a_replays_lease_lasts_the_seconds_it_is_given(docs: Docs) -> None:
    """``lease``: the lease document, taken and renewed by the replay's batches, expires that
    many seconds ahead (a killed replay's is taken over sooner), not the default 30."""
    events = deposits(60, 5, seed=7)
    docs.feed(events)
    locks = docs.store.database[REPLAY_LOCKS]
    ahead: list[float] = []

    class Watch(ReplayHooks):
        def before_swap(self) -> None:
            expires = locks.find_one({"_id": "doc_totals"})["expires_at"]  # type: ignore[index]
            now = datetime.now(UTC)
            ahead.append((expires.replace(tzinfo=UTC) - now).total_seconds())

    docs.replayer(hooks=Watch(), lease=2.0).run(ReplayOptions())
    assert len(ahead) == 1 and 0 < ahead[0] <= 2.0, ahead
    assert docs.totals() == totals(events)


def test_a_swap_refuses_to_commit_once_its_lease_was_taken_over(docs: Docs) -> None:
    docs.feed(deposits(200, 5, seed=6))
    before = docs.documents()

    class TakeOver(ReplayHooks):
        def before_swap(self) -> None:
            docs.store.database[REPLAY_LOCKS].update_one(
                {"_id": "doc_totals"}, {"$set": {"owner": "someone else"}}
            )

    with pytest.raises(ReplayLocked, match="lease was taken over"):
        docs.replayer(hooks=TakeOver()).run(ReplayOptions())
    assert docs.documents() == before
    assert generation_of(docs.store.database, "doc_totals") == 0


class StallPastTheLease(ReplayHooks):
    """After the replay's first batch, it "stalls" past its lease (the lease is expired by
    hand, as a SIGSTOP longer than the lease would leave it) and ``meanwhile`` runs: another
    replay that takes the lease over."""

    def __init__(self, database: Any, meanwhile: Callable[[], Any]) -> None:
        self.database = database
        self.meanwhile = meanwhile
        self.stalled = False

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        if self.stalled:
            return
        self.stalled = True
        self.database[REPLAY_LOCKS].update_one(
            {}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
        )
        self.meanwhile()


def test_a_rebuild_whose_lease_was_taken_over_writes_nothing_more(docs: Docs) -> None:
    """A stalls past its lease; B takes it over, rebuilds into generation 1 and swaps. A's
    next shadow batch (which would write into doc_totals__g1, now B's live generation) finds
    the lease lost and stops: the live model stays B's, equal to a clean build."""
    events = deposits(3000, 20, seed=21)
    docs.feed(events)
    database = docs.store.database
    stall = StallPastTheLease(database, lambda: docs.replayer(batch=500).run(ReplayOptions()))

    with pytest.raises(ReplayLocked, match="lease was taken over"):
        docs.replayer(hooks=stall, batch=500).run(ReplayOptions())
    assert stall.stalled
    assert generation_of(database, "doc_totals") == 1
    assert docs.totals() == totals(events)
    assert "doc_totals__g2" not in docs.collection_names()


def test_a_rebuild_stops_when_a_takeover_drops_its_shadow_and_builds_its_own(
    docs: Docs,
) -> None:
    """B takes the lease over and is itself interrupted while building generation 1: A must
    not write into B's shadow either."""
    events = deposits(3000, 20, seed=22)
    docs.feed(events)
    database = docs.store.database

    def b_interrupted() -> None:
        with pytest.raises(KeyboardInterrupt):
            docs.replayer(hooks=Interrupt(after_batches=1), batch=500).run(ReplayOptions())
        # B died holding the lease (its process was killed): the lease stays B's
        database[REPLAY_LOCKS].insert_one(
            {"_id": "doc_totals", "owner": "B", "holder": "h:2", "expires_at": datetime.now(UTC)}
        )

    stall = StallPastTheLease(database, b_interrupted)
    with pytest.raises(ReplayLocked, match="lease was taken over"):
        docs.replayer(hooks=stall, batch=500).run(ReplayOptions())
    shadow = list(database["doc_totals__g1"].find())
    assert sum(d["events"] for d in shadow) == 500  # B's one batch, nothing of A's
    assert generation_of(database, "doc_totals") == 0
    assert docs.totals() == totals(events)


def test_an_in_place_replay_whose_lease_was_taken_over_writes_nothing_more(docs: Docs) -> None:
    events = deposits(2000, 20, seed=23)
    docs.feed(events)
    database = docs.store.database

    def take_over() -> None:
        with replay_lock(docs.store, "doc_last_deposit"):
            database["doc_last_deposit"].update_many({}, {"$set": {"amount": -7}})

    stall = StallPastTheLease(database, take_over)
    with pytest.raises(ReplayLocked, match="lease was taken over"):
        docs.replayer("doc_last_deposit", hooks=stall, batch=300).run(
            ReplayOptions(from_position=0)
        )
    assert {d["amount"] for d in database["doc_last_deposit"].find()} == {-7}


def test_a_lost_generation_record_drops_nothing_and_workers_refuse_to_start(
    docs: Docs,
) -> None:
    """After a swap to generation 1, the rm_generations document is lost (a restore of an old
    dump): cleanup and a rebuild refuse to drop doc_totals__g1, the only full copy, and a
    worker's start refuses to begin an empty generation 0; recording it again fixes all."""
    events = deposits(300, 10, seed=31)
    docs.feed(events)
    docs.replayer().run(ReplayOptions())
    database = docs.store.database
    assert "doc_totals" not in docs.collection_names()
    database[GENERATIONS].delete_one({"_id": "doc_totals"})

    lost = "doc_totals__g1 belong to a generation above the one rm_generations records"
    with pytest.raises(StoreError, match=lost):
        docs.replayer().cleanup()
    with pytest.raises(StoreError, match=lost):
        docs.replayer().run(ReplayOptions())
    worker_store = MongoStore(docs.url)
    try:
        with pytest.raises(StoreError, match="record it again"):
            worker_store.create_tables([docs.projections["doc_totals"]])
    finally:
        worker_store.close()
    assert "doc_totals__g1" in docs.collection_names()
    assert "doc_totals" not in docs.collection_names()

    database[GENERATIONS].update_one(
        {"_id": "doc_totals"}, {"$set": {"generation": 1}}, upsert=True
    )
    docs.store.create_tables([docs.projections["doc_totals"]])
    assert docs.replayer().cleanup() == []
    assert docs.totals() == totals(events)


def test_a_shadow_is_still_cleaned_up_but_no_unrecorded_generation(docs: Docs) -> None:
    """An interrupted rebuild's shadow (recorded as building) is dropped by cleanup; once
    the record is lost, generations above it are not, even with a generation 0 present (an
    old dump restored)."""
    docs.feed(deposits(300, 10, seed=32))
    docs.replayer().run(ReplayOptions())
    database = docs.store.database
    with pytest.raises(KeyboardInterrupt):
        docs.replayer(hooks=Interrupt(after_batches=1), batch=100).run(ReplayOptions())
    assert docs.replayer().cleanup() == ["doc_totals__g2"]  # the interrupted rebuild's shadow
    with pytest.raises(KeyboardInterrupt):
        docs.replayer(hooks=Interrupt(after_batches=1), batch=100).run(ReplayOptions())
    database[GENERATIONS].delete_one({"_id": "doc_totals"})
    database["doc_totals"].insert_one({"_id": "acct-1", "events": 1, "total": 1, "last_seq": 1})
    with pytest.raises(StoreError, match="doc_totals__g1, doc_totals__g2 belong"):
        docs.replayer().cleanup()
    assert {"doc_totals", "doc_totals__g1", "doc_totals__g2"} <= docs.collection_names()


def test_cleanup_keeps_a_retired_generation_for_the_retire_after_its_replay_ran_with(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay run with retire_after=600 is killed while it waits to drop the old
    generation; a --cleanup with the default 5 s keeps it until 600 s have passed."""
    docs.feed(deposits(200, 5, seed=41))

    def killed(self: DocumentReplayer, old: int, swapped: float) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(DocumentReplayer, "_retire", killed)
        with pytest.raises(KeyboardInterrupt):
            docs.replayer(retire_after=600).run(ReplayOptions())
    database = docs.store.database

    def retired_ago(seconds: float) -> None:
        when = datetime.now(UTC) - timedelta(seconds=seconds)
        database[GENERATIONS].update_one({"_id": "doc_totals"}, {"$set": {"retired.g0": when}})

    retired_ago(10)
    cleanup = docs.replayer(retire_after=5)
    assert cleanup.plan(ReplayOptions()).leftovers == []
    assert cleanup.cleanup() == [] and cleanup.kept == ["doc_totals"]
    retired_ago(601)
    assert cleanup.cleanup() == ["doc_totals"] and cleanup.kept == []
    found = database[GENERATIONS].find_one({"_id": "doc_totals"})
    assert not found.get("retired") and not found.get("retire_after")


# -- handler errors, parked events, cache ----------------------------------------------


def test_strict_replay_stops_at_the_failing_event_and_skip_errors_parks_it(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = deposits(600, 6, seed=9)
    docs.feed(events)
    before = docs.documents()
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-3")
    monkeypatch.setenv("READMODEL_TEST_FAIL_FROM_SEQ", "4")
    acct3 = [i + 1 for i, e in enumerate(events) if e[0] == "acct-3"]

    with pytest.raises(ReplayError) as failure:
        docs.replayer(batch=1000).run(ReplayOptions())
    message = str(failure.value)
    assert f"bank:{acct3[3]} (Deposited of account:acct-3)" in message
    assert "refusing acct-3" in message and "the live model is as it was" in message
    assert docs.documents() == before

    summary = docs.replayer(batch=1000).run(ReplayOptions(skip_errors=True))
    assert [s.position for s in summary.skipped] == acct3[3:]
    assert summary.skipped[0].held_behind is None
    assert all(s.held_behind == acct3[3] for s in summary.skipped[1:])
    got, want = docs.totals(), totals(events)
    assert got["acct-3"] == totals([e for e in events if e[0] == "acct-3"][:3])["acct-3"]
    assert {k: v for k, v in got.items() if k != "acct-3"} == {
        k: v for k, v in want.items() if k != "acct-3"
    }
    parked = docs.engine.parked("doc_totals")
    assert [p.position for p in parked] == acct3[3:]
    assert "refusing acct-3" in parked[0].reason

    # Live events of the held aggregate are parked behind it; a retry once fixed applies all.
    more = deposits(40, 6, seed=10, seqs={a: s for a, (_, _, s) in want.items()})
    docs.feed(more)
    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
    parked = docs.engine.parked("doc_totals")
    assert docs.engine.retry(parked[0]) == len(parked)
    assert docs.totals() == totals(events + more)


def test_events_parked_live_are_reattempted_by_the_rebuild_and_released(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = deposits(300, 5, seed=11)
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-1")
    docs.engine.max_attempts = 1
    docs.feed(events)
    assert len(docs.engine.parked("doc_totals")) == sum(1 for e in events if e[0] == "acct-1")
    assert "acct-1" not in docs.totals()

    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")  # the handler is fixed
    summary = docs.replayer().run(ReplayOptions())
    assert summary.released_parked == len([e for e in events if e[0] == "acct-1"])
    assert docs.engine.parked("doc_totals") == []
    assert docs.totals() == totals(events)
    more = deposits(50, 5, seed=12, seqs={a: s for a, (_, _, s) in totals(events).items()})
    docs.feed(more)  # the aggregate is no longer held
    assert docs.totals() == totals(events + more)


TENANT_CONFLICT = (
    "TenantError(\"doc_accounts: tenant 'globex' cannot write the document of 'doc_accounts' "
    "with _id 'a1': another tenant's document holds that _id"
)


class _LateConflict(ReplayHooks):
    """Logs (and applies live) the conflicting events just before the swap, which then
    applies them to the new generation in its own transaction."""

    def __init__(self, accounts: Bank, events: list[Any]) -> None:
        self.accounts = accounts
        self.events = events

    def before_swap(self) -> None:
        self.accounts.append(self.events)
        self.events.clear()  # once


def _account_documents(accounts: Bank) -> list[tuple[str, str, str]]:
    database = accounts.store.database
    physical = collections_at(DocAccounts(), generation_of(database, "doc_accounts"))
    found = database[physical["doc_accounts"]].find().sort("_id", 1)
    return [(d["_id"], d["tenant"], d["owner"]) for d in found]


@pytest.mark.parametrize("where", ["one batch", "a later batch", "the swap"])
def test_a_tenant_conflict_stops_a_rebuild_at_its_event_unless_skipped_then_parked(
    bank: Bank, where: str
) -> None:
    """An event writing an ``_id`` another tenant's document holds is parked live; a rebuild
    meets the same conflict (in the batch that wrote the first document, in a later one, or
    in the swap's last events) and stops at that event, the live model untouched, unless
    ``skip_errors``: then the event stays parked (not counted as released) and the rest is
    swapped in."""
    conflicting = [opened("globex", "a1", "bob"), opened("globex", "g1", "bob")]
    bank.append([opened("acme", "a1", "ann")])
    if where != "the swap":
        bank.append(conflicting)
    database = bank.store.database

    late = _LateConflict(bank, conflicting if where == "the swap" else [])

    def replayer() -> DocumentReplayer:
        return DocumentReplayer(
            LogReader(bank.log),
            DocAccounts(),
            bank.store,
            hooks=late,
            batch_size=1 if where == "a later batch" else 1000,
            retire_after=0.0,
        )

    with pytest.raises(ReplayError) as failure:
        replayer().run(ReplayOptions())
    message = str(failure.value)
    assert message.startswith(
        f"doc_accounts: replay stopped at bank:2 (Opened of account:a1): {TENANT_CONFLICT}"
    ), message
    assert message.endswith("the live model is as it was (--skip-errors skips such events)")
    live = [("a1", "acme", "ann"), ("g1", "globex", "bob")]
    assert generation_of(database, "doc_accounts") == 0 and _account_documents(bank) == live
    (parked,) = bank.engine.parked("doc_accounts")
    assert (parked.position, parked.status) == (2, "parked")
    assert TENANT_CONFLICT in parked.reason

    summary = replayer().run(ReplayOptions(skip_errors=True))
    assert [s.position for s in summary.skipped] == [2]
    assert summary.skipped[0].error.startswith(f"replay: handler failed: {TENANT_CONFLICT}")
    assert summary.released_parked == 0  # the one parked live is parked still
    assert generation_of(database, "doc_accounts") == 1 and _account_documents(bank) == live
    (parked,) = bank.engine.parked("doc_accounts")
    assert (parked.position, parked.status) == (2, "parked")
    assert parked.reason.startswith(f"replay: handler failed: {TENANT_CONFLICT}")
    assert bank.queries.get("doc_accounts", "a1", tenant="globex").value is None
    assert bank.queries.get("doc_accounts", "a1", tenant="acme").value["owner"] == "ann"


def test_readmodel_replay_of_a_tenant_conflict_exits_1_naming_the_event_or_skips_it(
    bank: Bank, tmp_path: Path
) -> None:
    bank.append([opened("acme", "a1", "ann")])
    bank.append([opened("globex", "a1", "bob"), opened("globex", "g1", "bob")])
    live = _account_documents(bank)
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.document_query_fixtures:DocAccounts"],
            "store": {"url": bank.log.engine.url.render_as_string(hide_password=False)},
            "stores": {"docs": {"url": bank.url}},
        },
    )
    c = ["--yes", "--retire-after", "0", "--config", str(config)]

    strict = run_cli(["replay", "doc_accounts", *c])
    assert strict.exit_code == 1, strict.output
    stderr = " ".join(strict.stderr.split())
    assert "error: doc_accounts: replay stopped at bank:2 (Opened of account:a1): " in stderr
    assert TENANT_CONFLICT in stderr and "the live model is as it was" in stderr
    assert generation_of(bank.store.database, "doc_accounts") == 0
    assert _account_documents(bank) == live

    skipped = run_cli(["replay", "doc_accounts", "--skip-errors", *c])
    assert skipped.exit_code == 0, skipped.output
    stdout = " ".join(skipped.stdout.split())
    assert "doc_accounts: rebuilt and swapped in: 2 events" in stdout
    assert (
        "skipped 1 events (now parked): bank:2 Opened account:a1 (tenant globex): "
        "replay: handler failed: " + TENANT_CONFLICT
    ) in stdout
    assert "replayed and released" not in stdout
    assert generation_of(bank.store.database, "doc_accounts") == 1
    assert _account_documents(bank) == live
    assert [(p.position, p.status) for p in bank.engine.parked("doc_accounts")] == [(2, "parked")]


def test_the_swap_invalidates_the_projections_cache(docs: Docs) -> None:
    docs.feed(deposits(100, 5, seed=13))
    cache, loads = MemoryCache(), []

    def cached() -> Any:
        def load() -> dict[str, int]:
            loads.append(1)
            return {"loads": len(loads)}

        return cache.get_or_load("doc_totals", "get:acct-1", ["account:acct-1"], load)

    cached(), cached()
    assert len(loads) == 1
    docs.store.journal_invalidations = True
    seen: list[Any] = []

    class Pending(ReplayHooks):
        def before_swap(self) -> None:
            seen.append(docs.store.pending_invalidations())

    docs.replayer(hooks=Pending(), cache=cache).run(ReplayOptions())
    assert seen == [[]]
    assert docs.store.pending_invalidations() == []  # journaled in the swap, then done
    cached()
    assert len(loads) == 2

    # A cache that cannot hear it: the journaled invalidation stays for the sweeper.
    class Deaf(MemoryCache):
        def invalidate_projection(self, projection: str) -> None:
            from projections.cache import CacheError

            raise CacheError("down")

    docs.replayer(cache=Deaf()).run(ReplayOptions())
    pending = docs.store.pending_invalidations()
    assert [(i.projection, i.tags) for i in pending] == [("doc_totals", (WHOLE_PROJECTION,))]


# -- in place --------------------------------------------------------------------------


def test_in_place_replay_only_for_replay_safe_projections(docs: Docs) -> None:
    events = deposits(400, 8, seed=14)
    docs.feed(events)
    with pytest.raises(ReplayRefused, match="not replay-safe"):
        docs.replayer().run(ReplayOptions(from_position=0))
    database = docs.store.database
    database["doc_deposits"].delete_many({"_id": {"$gt": 200}})
    database["doc_last_deposit"].update_many({}, {"$set": {"amount": -1}})
    checkpoints = docs.checkpoints("doc_last_deposit")

    summary = docs.replayer("doc_last_deposit", batch=90).run(ReplayOptions(from_position=200))
    assert summary.events == 200 and summary.checkpoints == {"bank": docs.head}
    assert docs.checkpoints("doc_last_deposit") == checkpoints
    assert database["doc_deposits"].count_documents({}) == 400
    last = {d["_id"]: d["amount"] for d in database["doc_last_deposit"].find()}
    touched = {a for a, _, _ in events[200:]}
    expected = {a: p["amount"] for a, _, p in events}
    assert {a: v for a, v in last.items() if a in touched} == {
        a: v for a, v in expected.items() if a in touched
    }
    assert generation_of(database, "doc_last_deposit") == 0  # in place: no new generation


def test_an_in_place_replay_re_applies_events_applied_live_meanwhile(
    docs: Docs, mongo_database: Callable[[], str]
) -> None:
    """Live batches apply an account's newer deposits (beyond the checkpoint the replay
    started at) before the replay re-applies its older ones: the replay goes on to the
    lanes' checkpoints, and ends equal to a clean build."""
    seqs: dict[str, int] = {}
    docs.feed(deposits(400, 8, seed=15, seqs=seqs))
    fed = {"batches": 0}

    class LiveBetween(ReplayHooks):
        def progress(self, source: str, position: int, applied: int, total: int) -> None:
            fed["batches"] += 1
            if fed["batches"] <= 3:
                docs.feed(deposits(40, 8, seed=200 + fed["batches"], seqs=seqs))

    summary = docs.replayer("doc_last_deposit", hooks=LiveBetween(), batch=64).run(
        ReplayOptions(from_position=0)
    )
    assert docs.head == 520 and summary.checkpoints == {"bank": 520}
    assert docs.documents("doc_last_deposit") == clean_build(
        docs, mongo_database, "doc_last_deposit"
    )


# -- the CLI ---------------------------------------------------------------------------


def _cli_config(tmp_path: Path, docs: Docs) -> str:
    return str(docs_config(tmp_path, docs.log, docs.url, PROJECTIONS))


def test_cli_replays_a_document_projection_end_to_end(docs: Docs, tmp_path: Path) -> None:
    events = deposits(300, 9, seed=15)
    docs.feed(events)
    docs.store.database["doc_totals"].update_many({}, {"$set": {"total": 0}})
    config = _cli_config(tmp_path, docs)

    dry = run_cli(["replay", "doc_totals", "--dry-run", "--config", config])
    assert dry.exit_code == 0, dry.output
    assert "blue/green rebuild into shadow collections" in dry.stdout
    assert "collection doc_totals <- doc_totals__g1" in dry.stdout
    assert "dry run: nothing was changed" in dry.stdout
    assert "doc_totals__g1" not in docs.collection_names()

    with replay_lock(docs.store, "doc_totals"):
        busy = run_cli(["replay", "doc_totals", "--yes", "--config", config])
    assert busy.exit_code == 1 and "another replay of 'doc_totals' is running" in busy.stderr

    refused = run_cli(["replay", "doc_totals", "--from-position", "5", "--yes", "--config", config])
    assert refused.exit_code == 2 and "not replay-safe" in refused.stderr

    done = run_cli(["replay", "doc_totals", "--yes", "--retire-after", "0", "--config", config])
    assert done.exit_code == 0, done.output
    assert "doc_totals: rebuilt and swapped in: 300 events" in done.stdout
    assert docs.totals() == totals(events)
    assert "doc_totals" not in docs.collection_names()  # generation 0, dropped at once

    query = run_cli(["query", "doc_totals", "acct-1", "--json", "--config", config])
    row = json.loads(query.output.splitlines()[-1])["row"]
    assert query.exit_code == 0 and row["total"] == totals(events)["acct-1"][1]

    safe = run_cli(
        ["replay", "doc_last_deposit", "--from-position", "100", "--yes", "--config", config]
    )
    assert safe.exit_code == 0 and "replayed in place: 200 events" in safe.stdout, safe.output


def _start_replay(config: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "workers.cli", "replay", "doc_totals", "--yes"]
    return subprocess.Popen(
        [*command, "--batch-size", "100", "--config", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, SLOW: "0.002"},  # 16 s at least: the signal comes half-way
    )


def _wait_for_shadow_progress(docs: Docs, replay: subprocess.Popen[str], past: int) -> None:
    shadow = docs.store.database[CHECKPOINTS]
    deadline = time.monotonic() + 60
    while True:
        assert replay.poll() is None, replay.communicate()
        assert time.monotonic() < deadline, "the rebuild never started"
        found = shadow.find_one({"projection": "doc_totals__rebuild"}, sort=[("position", -1)])
        if found is not None and found["position"] > past:
            return
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_killed_cli_replay_leaves_the_live_model_and_a_removable_shadow(
    docs: Docs, tmp_path: Path, sig: signal.Signals
) -> None:
    """A real SIGINT (Ctrl-C) or SIGKILL to a ``readmodel replay`` process half-way."""
    applied = deposits(300, 9, seed=16)
    docs.feed(applied)
    seqs = {a: s for a, (_, _, s) in totals(applied).items()}
    docs.feed(deposits(8000, 50, seed=17, seqs=seqs), apply=False)
    docs.store.database["doc_totals"].update_many({}, {"$set": {"total": 7}})
    before, checkpoints = docs.documents(), docs.checkpoints()
    config = _cli_config(tmp_path, docs)
    replay = _start_replay(config)
    try:
        _wait_for_shadow_progress(docs, replay, 1000)
        replay.send_signal(sig)
        _, stderr = replay.communicate(timeout=60)
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait()

    shadow = docs.store.database[CHECKPOINTS].find_one({"projection": "doc_totals__rebuild"})
    assert shadow is not None and shadow["position"] < docs.head  # it stopped half-way
    assert docs.documents() == before and docs.checkpoints() == checkpoints
    assert "doc_totals__g1" in docs.collection_names()
    if sig == signal.SIGINT:
        assert replay.returncode == 130, stderr
        assert "interrupted: the live model of 'doc_totals' is untouched" in stderr
    else:
        assert replay.returncode == -signal.SIGKILL
        busy = run_cli(["replay", "doc_totals", "--cleanup", "--config", config])
        assert busy.exit_code == 1 and "holds its lease until" in busy.stderr
        docs.store.database[REPLAY_LOCKS].update_one(  # as if the lease ran out
            {"_id": "doc_totals"},
            {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}},
        )

    cleanup = run_cli(["replay", "doc_totals", "--cleanup", "--config", config])
    assert cleanup.exit_code == 0 and "dropped doc_totals__g1" in cleanup.stdout, cleanup.output
    assert "doc_totals__g1" not in docs.collection_names()
    assert docs.documents() == before


def test_a_rebuild_warns_of_indexes_made_by_hand_on_a_live_collection(
    docs: Docs, tmp_path: Path
) -> None:
    class Indexed(DocTotals):
        collection_indexes = {"doc_totals": ["last_seq"]}

    docs.projections["doc_totals"] = Indexed()
    docs.store.create_tables([Indexed()])
    docs.feed(deposits(50, 5, seed=51))
    assert docs.replayer().plan(ReplayOptions()).warnings == []
    docs.store.database["doc_totals"].create_index([("total", 1), ("events", 1)], name="by_hand")
    warning = "index by_hand on doc_totals (total, events) is not declared in collection_indexes"
    (found,) = docs.replayer().plan(ReplayOptions()).warnings
    assert found.startswith(warning)

    docs.projections["doc_totals"] = DocTotals()
    dry = run_cli(["replay", "doc_totals", "--dry-run", "--config", _cli_config(tmp_path, docs)])
    assert dry.exit_code == 0 and "warning: index by_hand on doc_totals" in dry.stdout, dry.output


def test_a_document_replayer_refuses_a_sql_store(docs: Docs, sqlite_database: Any) -> None:
    from projections.sql_store import SqlStore

    store = SqlStore(sqlite_database())
    with pytest.raises(ReplayRefused, match="needs a MongoDB store"):
        DocumentReplayer(LogReader(docs.log), DocTotals(), store)  # type: ignore[arg-type]
    store.close()
