"""The swap guard (projections/document_swap_guard.py): a live swap whose heartbeat stood
still is ended and runs again, nothing applied twice; a dead swap is ended by parked
retries and skips too, by two workers at once, and its stale record troubles no later
replay."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from projections import document_swap_guard
from projections.document_generations import generation_of
from projections.document_replay import DocumentReplayer
from projections.mongo_store import MongoStore
from projections.replay_types import ReplayHooks, ReplayOptions
from tests.document_replay_helpers import Docs, deposits, docs, kill_in_swap, totals

__all__ = ["docs"]  # the fixture

PAUSE = document_swap_guard.CHECK_AFTER + document_swap_guard.DEAD_AFTER + 3


def test_a_swap_whose_heartbeat_stalled_but_lives_is_ended_and_runs_again(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay's heartbeat thread beats no more (starved, or the process paused) while its
    swap holds the lanes for longer than DEAD_AFTER: a live worker ends the swap's session.
    The replay, going on, finds its transaction gone and runs the swap again on top of what
    the live worker applied meanwhile: the model equals a clean build."""
    first = deposits(300, 6, seed=41)
    docs.feed(first)
    later = deposits(40, 6, seed=42, seqs={a: s for a, (_, _, s) in totals(first).items()})
    monkeypatch.setattr(document_swap_guard, "BEAT_SECONDS", 3600.0)
    settle = DocumentReplayer._settle_parked
    holding = threading.Event()

    def slow_settle(self: DocumentReplayer, session: Any) -> int:
        if not holding.is_set():
            holding.set()
            time.sleep(PAUSE)
        return settle(self, session)

    monkeypatch.setattr(DocumentReplayer, "_settle_parked", slow_settle)

    class FeedLater(ReplayHooks):
        def before_swap(self) -> None:
            docs.feed(later, apply=False)

    outcome: list[Any] = []

    def replay() -> None:
        try:
            outcome.append(docs.replayer(hooks=FeedLater()).run(ReplayOptions()))
        except BaseException as exc:  # reported below
            outcome.append(exc)

    replaying = threading.Thread(target=replay, daemon=True)
    live_store = MongoStore(docs.url)
    live = docs.engine_on(live_store)
    try:
        with capture_logs() as logs:
            replaying.start()
            assert holding.wait(30)
            live.catch_up(["doc_totals"])
            replaying.join(timeout=60)
    finally:
        live.close()
    assert not replaying.is_alive()
    assert len(outcome) == 1 and not isinstance(outcome[0], BaseException), (outcome, logs)
    assert [e for e in logs if "died in its swap" in e["event"]], logs
    assert generation_of(docs.store.database, "doc_totals") == 1
    docs.engine.catch_up()
    assert docs.totals() == totals(first + later)
    assert set(docs.checkpoints().values()) == {docs.head}
    assert docs.store.database[document_swap_guard.SWAPS].count_documents({}) == 0


@pytest.mark.parametrize("how", ["retry", "skip"])
def test_a_parked_retry_or_skip_behind_a_killed_swap_ends_it_within_seconds(
    docs: Docs, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Retrying or skipping a parked event locks its lane (or writes the parked events the
    swap settles), which a replay killed in its swap holds: it ends the dead swap's session
    as a live batch does, instead of waiting the server's 60 s."""
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-2")
    monkeypatch.setenv("READMODEL_TEST_FAIL_FROM_SEQ", "3")
    events = deposits(200, 4, seed=43)
    docs.feed(events)
    parked = docs.engine.parked("doc_totals")
    assert parked
    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
    kill_in_swap(docs)
    started = time.monotonic()
    with capture_logs() as logs:
        if how == "retry":
            assert docs.engine.retry(parked[0]) == len(parked)
        else:
            docs.engine.skip(parked[0])
    took = time.monotonic() - started
    assert took < 20, f"the {how} waited {took:.0f} s for the killed swap"
    assert [e for e in logs if "died in its swap" in e["event"]], logs
    assert generation_of(docs.store.database, "doc_totals") == 0
    acct2 = [e for e in events if e[0] == "acct-2"]
    found = {d["_id"]: d for d in docs.documents()["doc_totals"]}
    kept = events if how == "retry" else [e for e in events if e is not acct2[2]]
    assert {k: (d["events"], d["total"]) for k, d in found.items()} == {
        k: (n, total) for k, (n, total, _) in totals(kept).items()
    }


def test_two_workers_meeting_a_dead_swap_at_once_both_go_on_each_event_once(
    docs: Docs,
) -> None:
    """Two live workers conflict with a replay killed in its swap at the same time: both may
    end its session (ending it twice is harmless), the record goes, and the lanes are
    applied once: the model equals a clean build."""
    first = deposits(300, 6, seed=46)
    docs.feed(first)
    later = deposits(60, 6, seed=47, seqs={a: s for a, (_, _, s) in totals(first).items()})
    kill_in_swap(docs)
    docs.feed(later, apply=False)
    engines = [docs.engine_on(MongoStore(docs.url)) for _ in range(2)]
    errors: list[BaseException] = []

    def apply(engine: Any) -> None:
        try:
            engine.catch_up(["doc_totals"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=apply, args=(e,)) for e in engines]
    started = time.monotonic()
    try:
        with capture_logs() as logs:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
    finally:
        for engine in engines:
            engine.close()
    assert time.monotonic() - started < 20
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert 1 <= len([e for e in logs if "died in its swap" in e["event"]]) <= 2, logs
    assert generation_of(docs.store.database, "doc_totals") == 0
    assert docs.totals() == totals(first + later)
    assert set(docs.checkpoints().values()) == {docs.head}
    assert docs.store.database[document_swap_guard.SWAPS].count_documents({}) == 0


def test_a_stale_swap_record_is_taken_over_by_the_next_replay_and_removed(
    docs: Docs,
) -> None:
    """A replay killed in its swap with no live worker around leaves its record (the server
    ended its transaction later): the next replay records its own session over it, swaps,
    and removes it; live batches meanwhile and after are not held."""
    first = deposits(200, 6, seed=48)
    docs.feed(first)
    swaps = docs.store.database[document_swap_guard.SWAPS]
    with docs.store.client.start_session() as gone:
        swaps.insert_one({"_id": "doc_totals", "lsid": gone.session_id, "holder": "gone:1"})
    later = deposits(40, 6, seed=49, seqs={a: s for a, (_, _, s) in totals(first).items()})

    class FeedLater(ReplayHooks):
        def before_swap(self) -> None:
            docs.feed(later)

    with capture_logs() as logs:
        docs.replayer(hooks=FeedLater()).run(ReplayOptions())
        docs.engine.catch_up()
    assert not [e for e in logs if "died in its swap" in e["event"]], logs
    assert swaps.count_documents({}) == 0
    assert generation_of(docs.store.database, "doc_totals") == 1
    assert docs.totals() == totals(first + later)
    assert set(docs.checkpoints().values()) == {docs.head}
