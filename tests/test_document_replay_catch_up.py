"""A document rebuild's catch-up passes end once one finds no less to do than the one
before: under live writes as fast as the rebuild, a small batch never swapped (it waited
for a pass less than a batch behind)."""

from __future__ import annotations

from projections.replay_types import ReplayHooks, ReplayOptions
from tests.document_replay_helpers import Deposits, Docs, deposits, docs, totals

__all__ = ["docs"]  # the fixture


class _SteadyLiveWrites(ReplayHooks):
    """At each shadow batch, as many new events as a batch holds are logged and applied
    live; stops writing after ``limit`` batches."""

    def __init__(self, docs: Docs, seqs: dict[str, int], per_batch: int, limit: int) -> None:
        self.docs = docs
        self.seqs = seqs
        self.per_batch = per_batch
        self.limit = limit
        self.batches = 0
        self.written: Deposits = []

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        self.batches += 1
        if self.batches <= self.limit:
            events = deposits(self.per_batch, 5, seed=self.batches, seqs=self.seqs)
            self.docs.feed(events)
            self.written += events


def test_a_document_rebuild_with_a_small_batch_swaps_while_live_writes_go_on(
    docs: Docs,
) -> None:
    seqs: dict[str, int] = {}
    first = deposits(60, 5, seed=3, seqs=seqs)
    docs.feed(first)
    hooks = _SteadyLiveWrites(docs, seqs, per_batch=6, limit=100)

    docs.replayer(hooks=hooks, batch=6).run(ReplayOptions())
    docs.engine.catch_up()

    assert hooks.batches < hooks.limit, "the rebuild waited for the live writes to stop"
    assert docs.totals() == totals([*first, *hooks.written])
