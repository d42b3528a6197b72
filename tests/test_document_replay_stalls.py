"""Document replays (projections/document_replay.py) against live work that is slow or dies:
a live batch still open when the old generation is dropped, and a replay killed inside its
swap's transaction, which holds the live lanes' checkpoints."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from projections.document_generations import generation_of
from projections.mongo_store import MongoStore
from projections.mongo_tx import DocumentTx
from projections.replay_types import ReplayHooks, ReplayOptions
from tests.document_replay_helpers import Docs, deposits, docs, kill_in_swap, totals

__all__ = ["docs"]  # the fixture

RETIRE_AFTER = 1.0
LIVE_BATCH_SECONDS = 4.0  # longer than RETIRE_AFTER: the batch outlives the old generation


@pytest.mark.parametrize("paused", ["after its writes", "before its writes"])
def test_a_live_batch_slower_than_retire_after_loses_nothing_and_stalls_no_drop(
    docs: Docs, monkeypatch: pytest.MonkeyPatch, paused: str
) -> None:
    """A live batch that began on the old generation is still open ``retire_after`` after the
    swap would have come. With its documents written to the old generation (not committed),
    the swap waits for it (its checkpoint is taken with its first write), then takes its
    events over; still reading, it meets the swap's checkpoint on its first write and is
    redone on the new generation. The drop of the old generation never waits for it (on the
    test server a drop behind an open transaction's writes held every operation back)."""
    first = deposits(400, 6, seed=31)
    docs.feed(first)
    later = deposits(60, 6, seed=32, seqs={a: s for a, (_, _, s) in totals(first).items()})
    live_store = MongoStore(docs.url)
    live = docs.engine_on(live_store)
    pausing = threading.Event()

    def pause_once() -> None:
        if not pausing.is_set():
            pausing.set()
            time.sleep(LIVE_BATCH_SECONDS)

    if paused == "after its writes":
        set_checkpoint = MongoStore._set_checkpoint

        def slow_end(self: MongoStore, *args: Any, **kwargs: Any) -> None:
            if self is live_store:
                pause_once()
            set_checkpoint(self, *args, **kwargs)

        monkeypatch.setattr(MongoStore, "_set_checkpoint", slow_end)
    else:
        flush = DocumentTx.flush

        def slow_start(self: DocumentTx) -> None:
            if self._database.client is live_store.client:
                pause_once()
            flush(self)

        monkeypatch.setattr(DocumentTx, "flush", slow_start)
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
            assert pausing.wait(30)

    outcome: list[Any] = []

    def replay() -> None:
        try:
            replayer = docs.replayer(hooks=LiveBatchInFlight(), retire_after=RETIRE_AFTER)
            outcome.append(replayer.run(ReplayOptions()))
        except BaseException as exc:  # reported below
            outcome.append(exc)

    replaying = threading.Thread(target=replay, daemon=True)
    started = time.monotonic()
    with capture_logs() as logs:
        replaying.start()
        replaying.join(timeout=30)
    took = time.monotonic() - started
    try:
        assert not replaying.is_alive(), "the replay stalled dropping the old generation"
        worker.join(timeout=60)
        assert not worker.is_alive() and errors == []
    finally:
        live.close()
    assert took < LIVE_BATCH_SECONDS + RETIRE_AFTER + 10
    assert len(outcome) == 1 and not isinstance(outcome[0], BaseException), outcome
    docs.engine.catch_up()
    assert docs.totals() == totals(first + later)
    assert set(docs.checkpoints().values()) == {docs.head}
    assert generation_of(docs.store.database, "doc_totals") == 1
    assert "doc_totals" not in docs.collection_names()  # the old generation was dropped
    waited = [e for e in logs if e["event"].startswith("the replay waits for transactions")]
    assert len(waited) == (1 if paused == "after its writes" else 0), logs


def test_a_replay_killed_in_its_swap_holds_the_live_lanes_for_seconds_not_a_minute(
    docs: Docs,
) -> None:
    """A replay SIGKILLed inside its swap's transaction (every lane's checkpoint written, the
    generation moved, nothing committed) leaves that transaction open on the server, which
    ends it only after 60 s idle: the live lanes' checkpoint writes conflict with it until
    then. A live worker that keeps conflicting finds the swap's heartbeat stopped and ends
    its session: the lanes go on within seconds, on the old generation, nothing lost."""
    first = deposits(300, 6, seed=33)
    docs.feed(first)
    later = deposits(40, 6, seed=34, seqs={a: s for a, (_, _, s) in totals(first).items()})
    kill_in_swap(docs)
    docs.feed(later, apply=False)
    started = time.monotonic()
    with capture_logs() as logs:
        docs.engine.catch_up()
    took = time.monotonic() - started
    assert took < 20, f"the live lanes waited {took:.0f} s for the killed swap"
    assert generation_of(docs.store.database, "doc_totals") == 0  # the swap never committed
    assert docs.totals() == totals(first + later)
    assert set(docs.checkpoints().values()) == {docs.head}
    ended = [e for e in logs if "died in its swap" in e["event"]]
    assert len(ended) == 1 and ended[0]["projection"] == "doc_totals", logs
