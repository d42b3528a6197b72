"""The seconds a document replay's lease lasts (``DocumentReplayer(lease=...)``, on a real
MongoDB-wire server): only a positive number of seconds is taken; a batch longer than a
third of it does not conflict with the lease's own renewal, and one longer than the whole
lease, taken over meanwhile, writes nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from projections.document_generations import generation_of
from projections.document_replay import DocumentReplayer
from projections.replay_lock import REPLAY_LOCKS, replay_lock
from projections.replay_types import ReplayLocked, ReplayOptions
from tests.document_replay_helpers import Docs, deposits, docs, totals
from tests.projection_fixtures import SLOW

__all__ = ["docs"]  # the fixture


@pytest.mark.parametrize("lease", [0.0, -1.0, float("nan"), float("inf")])
def test_a_lease_that_is_not_a_positive_number_of_seconds_is_refused(
    docs: Docs, lease: float
) -> None:
    """A lease of 0 (or less) would be renewed in a busy loop and be expired at once for any
    other replay to take over while this one runs; NaN and infinity cannot be added to a
    time. Each is refused before anything is written."""
    events = deposits(20, 5, seed=81)
    docs.feed(events)
    with pytest.raises(ValueError, match="lease must be a positive number of seconds"):
        docs.replayer(lease=lease)
    with (
        pytest.raises(ValueError, match="lease must be a positive number of seconds"),
        replay_lock(docs.store, "doc_totals", lease),
    ):
        pass
    assert docs.store.database[REPLAY_LOCKS].count_documents({}) == 0
    docs.replayer(lease=0.5).run(ReplayOptions())  # a short one is fine
    assert docs.totals() == totals(events)


def test_a_batch_longer_than_a_third_of_the_lease_commits(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease's thread renews it every third of the lease, and each batch proves it by
    renewing it in its transaction. A batch reading documents (the second one reads what
    the first wrote) for longer than a third of the lease conflicted at its proof with the
    thread's renewal, at every attempt, until the store's ``conflict_wait``: the replay
    failed on a write conflict (with the default lease, any transaction over 10 s)."""
    events = deposits(40, 5, seed=82)
    docs.feed(events)
    monkeypatch.setenv(SLOW, "0.03")  # a batch of 20 events takes 0.6 s
    docs.store.conflict_wait = 5.0
    docs.replayer(batch=20, lease=0.6).run(ReplayOptions())
    assert docs.totals() == totals(events)
    assert docs.store.database[REPLAY_LOCKS].count_documents({}) == 0


def test_a_batch_outlasting_its_lease_taken_over_meanwhile_writes_nothing(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay A's lease is shorter than its batch: while the batch's transaction is open the
    lease is not renewed, expires, and replay B takes it over and rebuilds. A's batch then
    fails to prove the lease and stops (ReplayLocked), writing nothing into B's generation:
    the live model is B's, equal to a clean build."""
    events = deposits(60, 5, seed=83)
    docs.feed(events)
    locks = docs.store.database[REPLAY_LOCKS]
    projection = docs.projections["doc_totals"]
    handle = projection.handle
    a_thread = threading.current_thread()
    handled: list[Any] = []
    outcome: list[Any] = []

    def replay_b() -> None:
        try:
            outcome.append(docs.replayer(batch=20).run(ReplayOptions()))
        except BaseException as exc:  # reported below
            outcome.append(exc)

    b_thread = threading.Thread(target=replay_b, daemon=True)

    def until(done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 20
        while not done():
            assert time.monotonic() < deadline, what
            time.sleep(0.02)

    def lease() -> dict[str, Any]:
        return locks.find_one({"_id": "doc_totals"}) or {}

    def expired() -> bool:
        return bool(lease()["expires_at"].replace(tzinfo=UTC) < datetime.now(UTC))

    def slow_in_second_batch(event: Any, tx: Any) -> None:
        handle(event, tx)
        if threading.current_thread() is not a_thread:
            return
        handled.append(event.position)
        if len(handled) == 22:  # inside A's second batch's transaction (once)
            owner = lease()["owner"]
            until(expired, "A's lease never expired while its batch was open")
            b_thread.start()
            until(lambda: lease().get("owner") != owner, "B did not take the lease over")

    a_ended = threading.Event()
    cleanup = DocumentReplayer._cleanup

    def cleanup_once_a_ended(replayer: DocumentReplayer) -> list[str]:
        """B drops A's shadow once A's batch has ended: the test server's drop waits for
        A's open transaction, whose next write waits for the drop (until the socket times
        out, 30 s, failing both); MongoDB times the transaction's lock request out instead."""
        if threading.current_thread() is b_thread:
            a_ended.wait(timeout=60)
        return cleanup(replayer)

    monkeypatch.setattr(projection, "handle", slow_in_second_batch)
    monkeypatch.setattr(DocumentReplayer, "_cleanup", cleanup_once_a_ended)
    try:
        with pytest.raises(ReplayLocked, match="lease was taken over"):
            docs.replayer(batch=20, lease=0.5).run(ReplayOptions())
    finally:
        a_ended.set()
        if b_thread.ident is not None:
            b_thread.join(timeout=60)
    assert len(outcome) == 1 and not isinstance(outcome[0], BaseException), outcome
    assert generation_of(docs.store.database, "doc_totals") == 1
    assert docs.totals() == totals(events)
    assert "doc_totals__g2" not in docs.collection_names()
