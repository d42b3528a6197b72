"""The seconds a document replay's lease lasts (``DocumentReplayer(lease=...)``, on a real
MongoDB-wire server): only a positive number of seconds is taken."""

from __future__ import annotations

import pytest

from projections.replay_lock import REPLAY_LOCKS, replay_lock
from projections.replay_types import ReplayOptions
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
