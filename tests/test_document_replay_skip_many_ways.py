"""Property: a blue/green document rebuild with ``--skip-errors`` skipping several failing
handlers in one transaction, each after writes, reads, a delete, a prefetch, a cache tag or
a flush of its own, among writes the server refuses at commit, leaves what a rebuild of
one event per transaction leaves: the documents, the skipped events in order with their
holds, the parked ones and the counts (a MongoDB-wire server; tables:
tests/test_replay_skip_many_ways.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbox.log import EventLog
from projections.api import Event, on
from tests.document_replay_helpers import deposits, rebuilds_refusing_taken_codes
from tests.document_skip_helpers import CountingTotals, rebuild
from tests.projection_fixtures import append_events

_WAYS = ("prefetch", "read", "own", "other", "delete", "find")


class _ManyWays(CountingTotals):
    @on("bank", "Boom")
    def boom(self, event: Event[dict[str, Any]], tx: Any) -> None:
        ways, account = event.payload, event.aggregate_id
        if ways.get("prefetch"):
            tx.prefetch("doc_totals", [account, "acct-0"])
        if ways.get("read"):
            tx.get("doc_totals", account)
        tx.upsert("doc_totals", {"_id": f"boom-{event.position}", "events": -1})
        if ways.get("own"):
            tx.upsert("doc_totals", {"_id": account, "events": -1, "total": 0, "last_seq": 0})
        if ways.get("other"):
            other = tx.get("doc_totals", "acct-0")
            if other is not None:
                tx.upsert("doc_totals", {**other, "total": other["total"] + 1000})
        if ways.get("delete"):
            tx.delete("doc_totals", "acct-1")
        tx.invalidate("boom")
        if ways.get("find"):
            tx.find("doc_totals", events=-1)
        raise ValueError("boom")


@st.composite
def _events(draw: st.DrawFn) -> list[tuple[str, str, dict[str, Any]]]:
    events: list[tuple[str, str, dict[str, Any]]] = list(
        deposits(draw(st.integers(1, 50)), 4, seed=draw(st.integers(0, 2**16)))
    )
    for _ in range(draw(st.integers(0, 2))):  # the server refuses its write at commit
        at = draw(st.integers(0, len(events) - 1))
        account, kind, payload = events[at]
        events[at] = (account, kind, {**payload, "taken": True})
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(events)))
        account = draw(st.sampled_from([f"acct-{k}" for k in range(2, 4)] + ["b-1", "b-2"]))
        ways = {way: True for way in draw(st.sets(st.sampled_from(_WAYS)))}
        events.insert(at, (account, "Boom", ways))
    return events


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=_events(), batch=st.integers(2, 60))
def test_several_skips_in_a_transaction_leave_what_one_event_per_transaction_leaves(
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
    events: list[tuple[str, str, dict[str, Any]]],
    batch: int,
) -> None:
    log = EventLog(pg_database())
    try:
        with pytest.MonkeyPatch.context() as patch:  # once per example
            rebuilds_refusing_taken_codes(patch)
            log.create_tables()
            append_events(log, events, source="bank", aggregate_type="account", after=0)
            got = rebuild(log, mongo_database(), _ManyWays(), batch=batch)
            alone = rebuild(log, mongo_database(), _ManyWays(), batch=1)
            assert got.skipped == alone.skipped
            assert got.parked == alone.parked
            assert got.applied == alone.applied
            assert got.documents == alone.documents
            failed = [s[1] for s in got.skipped if s[4] is None]  # not held: failed
            assert failed  # the first Boom, or a refused write before it holding its aggregate
            for at in failed:
                _, kind, payload = events[at - 1]
                assert kind == "Boom" or payload.get("taken"), (at, kind, payload)
    finally:
        log.close()
