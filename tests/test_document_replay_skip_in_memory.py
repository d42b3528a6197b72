"""A blue/green document rebuild with ``--skip-errors`` skips a failed handler's event inside
its transaction: the handler's writes and cache tags are taken back in memory
(:meth:`DocumentTx.undo`), its aggregate held from there on, and the transaction goes on.
It had rolled the transaction back and applied the events before the failure again: every
handler before it ran twice (a rebuild's transaction is up to 100,000 events), each failure
cost three or four transactions. Where a flush inside the handler (a ``find``) sent some of
its writes, it rolls back as before; a ``find`` before its first write sends none of them.
Either way the documents, the skipped events (in order) and the counts are what a rebuild
of one event per transaction leaves (a MongoDB-wire server; tables:
tests/test_replay_skip_in_memory.py; the Tx's undo: tests/test_document_tx_undo.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from outbox.log import EventLog
from tests.document_replay_helpers import deposits, totals
from tests.document_skip_helpers import (
    SHOP,
    CountingTotals,
    Rebuilt,
    TenantSteps,
    rebuild,
    tenant_steps,
)
from tests.projection_fixtures import append_events, append_tenant_events

BOOMED = ["acct-2", "b-1", "acct-3", "b-2", "acct-4", "acct-5", "b-3"]


@pytest.fixture
def log(pg_database: Callable[[], str]) -> Iterator[EventLog]:
    made = EventLog(pg_database())
    made.create_tables()
    yield made
    made.close()


def _bank(log: EventLog, flush: Callable[[int], bool], how: str = "flush") -> list[Any]:
    """300 deposits of 6 accounts with a failing ``Boom`` after every 40 (of an account
    with deposits after it, or an aggregate of its own; ``flush(k)``: the k-th flushes,
    ``how`` it does: ``flush`` after its writes, ``find_first`` before them)."""
    paid = deposits(300, 6, seed=11)
    events: list[Any] = []
    for k, account in enumerate(BOOMED):
        events += paid[40 * k : 40 * (k + 1)]
        events.append((account, "Boom", {how: True} if flush(k) else {}))
    events += paid[40 * len(BOOMED) :]
    append_events(log, events, source="bank", aggregate_type="account", after=0)
    return paid


def _both(log: EventLog, mongo_database: Callable[[], str], projection: Any) -> Rebuilt:
    """Rebuild in one transaction with ``projection``, and one event per transaction with
    another of its kind; both must leave the same."""
    whole = rebuild(log, mongo_database(), projection, batch=10_000)
    alone = rebuild(log, mongo_database(), type(projection)(), batch=1)
    assert whole.skipped == alone.skipped
    assert whole.parked == alone.parked
    assert whole.applied == alone.applied
    assert whole.documents == alone.documents
    return whole


def test_a_skipped_event_is_taken_back_in_memory_each_handler_runs_once(
    log: EventLog, mongo_database: Callable[[], str]
) -> None:
    paid = _bank(log, flush=lambda k: False)
    projection = CountingTotals()
    got = _both(log, mongo_database, projection)
    assert set(projection.runs.values()) == {1}, projection.runs  # none ran twice
    assert len(projection.runs) == got.applied + len(BOOMED)  # the held ones never ran
    failed = [s for s in got.skipped if s[4] is None]
    assert [s[3] for s in failed] == [
        f"replay: handler failed: {ValueError(f'boom {a}')!r}" for a in BOOMED
    ]
    assert len(got.skipped) > len(BOOMED)  # and the events held behind them
    found = {d["_id"]: d for d in got.documents["doc_totals"]}
    assert not [key for key in found if key.startswith("boom-")]  # taken back
    untouched = totals([e for e in paid if e[0] in ("acct-0", "acct-1")])
    for account, (count, total, seq) in untouched.items():  # changed, deleted: taken back
        assert (found[account]["events"], found[account]["total"]) == (count, total)
        assert found[account]["last_seq"] == seq


def test_a_find_before_the_failing_handlers_writes_leaves_them_taken_back_in_memory(
    log: EventLog, mongo_database: Callable[[], str]
) -> None:
    """Its find sends the deposits' writes before it, none of its own: the skip still takes
    them back in memory (it rolled the transaction back and applied it again)."""
    _bank(log, flush=lambda k: True, how="find_first")
    projection = CountingTotals()
    got = _both(log, mongo_database, projection)
    assert set(projection.runs.values()) == {1}, projection.runs  # none ran twice
    assert len(projection.runs) == got.applied + len(BOOMED)
    found = [d["_id"] for d in got.documents["doc_totals"]]
    assert not [key for key in found if key.startswith("boom-")]


@pytest.mark.parametrize("flushing", ["every", "some"])
def test_a_handler_that_flushed_before_failing_rolls_back_as_before(
    log: EventLog, mongo_database: Callable[[], str], flushing: str
) -> None:
    _bank(log, flush=(lambda k: True) if flushing == "every" else (lambda k: k % 2 == 1))
    projection = CountingTotals()
    got = _both(log, mongo_database, projection)
    assert projection.runs[1] == 2  # the transaction was rolled back and applied again
    found = [d["_id"] for d in got.documents["doc_totals"]]
    assert not [key for key in found if key.startswith("boom-")]


def test_a_tenant_projection_holds_merging_skipped_in_memory(
    log: EventLog, mongo_database: Callable[[], str]
) -> None:
    events = tenant_steps(240, seed=3)
    append_tenant_events(log, events, source=SHOP, aggregate_type="order")
    projection = TenantSteps()
    got = _both(log, mongo_database, projection)
    assert set(projection.runs.values()) == {1}, projection.runs
    failed = [s[1] for s in got.skipped if s[4] is None]
    assert failed and all(events[at - 1][3].get("poison") for at in failed)
    merged = [s for s in got.skipped if s[5] == "" and s[6] is not None]
    assert merged  # tenants' events held behind a hold naming no tenant
    seen = [step for d in got.documents["doc_step_log"] for step in d["seen"]]
    for at in (s[1] for s in got.skipped):  # nothing of a skipped event's is left
        tenant, order, _, payload = events[at - 1]
        assert f"{tenant or '-'}:{payload['step']}" not in [
            step for d in got.documents["doc_step_log"] if d["_id"] == order for step in d["seen"]
        ]
    assert seen
