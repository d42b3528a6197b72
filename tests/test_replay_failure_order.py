"""A strict replay stops at the first failing event of a transaction: a write the database
refuses (found only when the transaction's writes are flushed) before a handler that fails
at once stops it at the refused write, as the table and document rebuilds' shadow batches
do (tests/test_document_replay_failure_order.py); skipping errors, each event is skipped
once. Here, the swap of a table or document rebuild (late events a live lane applied
meanwhile: a handler failing there has the late events up to it applied outside the swap,
as the rebuild applies them) and the replays in place. Each had stopped at the later,
failing handler's event instead and, skipping errors, skipped that later event for its own
failure, then again behind the refused one when it was of the same aggregate (listed
twice in the summary); the table replay in place had not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on
from projections.document_generations import collections_at, generation_of
from projections.replay import Replayer
from projections.replay_types import ReplayError, ReplayHooks, ReplayOptions
from tests.document_fixtures import DocTotals, refuse_taken_codes
from tests.document_replay_helpers import (
    Docs,
    deposits,
    docs,
    rebuilds_refusing_taken_codes,
)
from tests.projection_fixtures import append_events, engine_on, log_events

__all__ = ["docs"]  # the fixture

owners = sa.Table(
    "ordered_owners",
    sa.MetaData(),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),
)

_trap: dict[str, Any] = {"refused": None, "boom": None}  # aggregate ids or positions


class Owners(Projection):
    """Owners whose ``refused`` aggregate is written NULL (refused by the database at the
    flush) and whose ``boom`` aggregate's handler fails, once the trap is set."""

    name = "ordered_owners"
    tables = (owners,)
    partitions = 1
    replay_safe = True

    @on("shop", "Placed")
    def placed(self, event: Event[dict], tx: Tx) -> None:
        if _trap["boom"] in (event.aggregate_id, event.position):
            raise RuntimeError(f"a bug met at {event.aggregate_id}")
        refused = _trap["refused"] in (event.aggregate_id, event.position)
        owner = None if refused else event.payload["owner"]
        tx.upsert(owners, {"id": event.aggregate_id, "owner": owner})


@pytest.fixture(autouse=True)
def _no_trap() -> Any:
    yield
    _trap.update(refused=None, boom=None)


def test_a_table_swap_stops_at_a_refused_write_before_a_failing_handler(
    database_for: Callable[[str], str],
) -> None:
    projection = Owners()
    with engine_on(database_for("postgresql"), [projection], max_attempts=1) as (
        log,
        store,
        engine,
    ):
        head = log_events(log, [(f"o{n}", "Placed", {"owner": "u"}) for n in range(10)])
        engine.catch_up(deadline=30)

        class LateEvents(ReplayHooks):
            def before_swap(self) -> None:  # applied live, then the handlers change
                late = [(a, "Placed", {"owner": "u"}) for a in ("refused", "fine", "boom")]
                append_events(log, late, after=head)
                engine.catch_up(deadline=30)
                _trap.update(refused="refused", boom="boom")

        replayer = Replayer(engine.reader, projection, store, hooks=LateEvents())
        with pytest.raises(ReplayError) as failure:
            replayer.run(ReplayOptions())
    assert failure.value.event.position == head + 1, str(failure.value)


def test_a_table_swap_skipping_errors_skips_a_refused_event_and_holds_the_later_failing_one(
    database_for: Callable[[str], str],
) -> None:
    """The refused event and a later one of its aggregate whose handler fails: skipped as
    the rebuild's own batches skip them, the first for its failure, the later held behind
    it (the swap held the later one first, for its own failure, then again behind the
    first: skipped twice)."""
    projection = Owners()
    with engine_on(database_for("postgresql"), [projection], max_attempts=1) as (
        log,
        store,
        engine,
    ):
        head = log_events(log, [(f"o{n}", "Placed", {"owner": "u"}) for n in range(10)])
        engine.catch_up(deadline=30)

        class LateEvents(ReplayHooks):
            def before_swap(self) -> None:  # applied live, then the handlers change
                late = [("a", "Placed", {"owner": "u"}), ("b", "Placed", {"owner": "u"})]
                append_events(log, [*late, ("a", "Placed", {"owner": "v"})], after=head)
                engine.catch_up(deadline=30)
                _trap.update(refused=head + 1, boom=head + 3)

        replayer = Replayer(engine.reader, projection, store, hooks=LateEvents())
        summary = replayer.run(ReplayOptions(skip_errors=True))
    skipped = [(s.position, s.held_behind) for s in summary.skipped]
    assert skipped == [(head + 1, None), (head + 3, head + 1)]


def test_a_table_replay_in_place_stops_at_a_refused_write_before_a_failing_handler(
    database_for: Callable[[str], str],
) -> None:
    """The in-place replay does apply the events before a failing one first."""
    projection = Owners()
    events = [(f"o{n}", "Placed", {"owner": "u"}) for n in range(10)]
    events[3] = ("refused", "Placed", {"owner": "u"})
    events[7] = ("boom", "Placed", {"owner": "u"})
    with engine_on(database_for("postgresql"), [projection], max_attempts=1) as (
        log,
        store,
        engine,
    ):
        log_events(log, events)
        engine.catch_up(deadline=30)
        _trap.update(refused="refused", boom="boom")
        replayer = Replayer(engine.reader, projection, store)
        with pytest.raises(ReplayError) as failure:
            replayer.run(ReplayOptions(from_position=0))
    assert failure.value.event.position == 4, str(failure.value)


class _SafeTotals(DocTotals):
    """:class:`DocTotals`, replay-safe here, writing at ``refused_at`` once set a document
    the server refuses when the batch is written (a code taken under a unique index)."""

    replay_safe = True
    refused_at: int | None = None

    @on("bank", "Deposited")
    def deposited(self, event: Event[dict], tx: Any) -> None:
        if event.position == self.refused_at:
            event = Event({**event.payload, "taken": True}, event.envelope)
        DocTotals.deposited(self, event, tx)


def _refusing_in_place(docs: Docs, refused: int) -> None:
    """Replays in place of ``doc_totals`` run :class:`_SafeTotals`, refused at ``refused``."""
    projection = _SafeTotals()
    projection.refused_at = refused
    docs.projections["doc_totals"] = projection
    live = collections_at(projection, generation_of(docs.store.database, "doc_totals"))
    refuse_taken_codes(docs.store.database, live["doc_totals"])


def _failing_after(events: list[Any], after: int) -> tuple[int, int]:
    """A deposit of ``acct-1`` past index ``after`` and one of ``acct-2`` after it."""
    refused = next(i for i, e in enumerate(events) if i > after and e[0] == "acct-1")
    failing = next(i for i, e in enumerate(events) if i > refused and e[0] == "acct-2")
    return refused, failing


def test_a_document_replay_in_place_stops_at_a_refused_write_before_a_failing_handler(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = deposits(60, 4, seed=21)
    refused, failing = _failing_after(events, 20)
    docs.feed(events)  # live: everything applied, nothing parked
    _refusing_in_place(docs, refused + 1)
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-2")  # the handler fails from now on
    monkeypatch.setenv("READMODEL_TEST_FAIL_FROM_SEQ", str(events[failing][2]["seq"]))
    with pytest.raises(ReplayError) as failure:
        docs.replayer(batch=1000).run(ReplayOptions(from_position=0))
    assert failure.value.event.position == refused + 1, str(failure.value)


def test_a_document_swap_stops_at_a_refused_write_before_a_failing_handler(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = deposits(60, 4, seed=21)
    docs.feed(events[:20])
    late = events[20:]
    refused, failing = _failing_after(late, 0)
    late[refused] = ("acct-1", "Deposited", {**late[refused][2], "taken": True})
    rebuilds_refusing_taken_codes(monkeypatch)

    class LateEvents(ReplayHooks):
        def before_swap(self) -> None:  # applied live (no unique index there), then a bug
            docs.feed(late)
            monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-2")
            monkeypatch.setenv("READMODEL_TEST_FAIL_FROM_SEQ", str(late[failing][2]["seq"]))

    with pytest.raises(ReplayError) as failure:
        docs.replayer(hooks=LateEvents(), batch=1000).run(ReplayOptions())
    assert failure.value.event.position == 20 + refused + 1, str(failure.value)


def test_a_document_swap_skipping_errors_skips_each_event_once(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = deposits(60, 4, seed=21)
    docs.feed(events[:20])
    late = events[20:]
    refused = next(i for i, e in enumerate(late) if e[0] == "acct-1")
    failing = next(i for i, e in enumerate(late) if i > refused and e[0] == "acct-1")
    late[refused] = ("acct-1", "Deposited", {**late[refused][2], "taken": True})
    rebuilds_refusing_taken_codes(monkeypatch)

    class LateEvents(ReplayHooks):
        def before_swap(self) -> None:  # applied live (no unique index there), then a bug
            docs.feed(late)
            monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-1")
            monkeypatch.setenv("READMODEL_TEST_FAIL_FROM_SEQ", str(late[failing][2]["seq"]))

    summary = docs.replayer(hooks=LateEvents(), batch=1000).run(ReplayOptions(skip_errors=True))
    positions = [s.position for s in summary.skipped]
    assert len(positions) == len(set(positions)), positions
    assert (summary.skipped[0].position, summary.skipped[0].held_behind) == (21 + refused, None)


def test_a_document_replay_in_place_skipping_errors_skips_each_event_once(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = deposits(60, 4, seed=21)
    refused = next(i for i, e in enumerate(events) if i > 20 and e[0] == "acct-1")
    failing = next(i for i, e in enumerate(events) if i > refused and e[0] == "acct-1")
    docs.feed(events)  # live: everything applied, nothing parked
    _refusing_in_place(docs, refused + 1)
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-1")
    monkeypatch.setenv("READMODEL_TEST_FAIL_FROM_SEQ", str(events[failing][2]["seq"]))
    summary = docs.replayer(batch=1000).run(ReplayOptions(from_position=0, skip_errors=True))
    positions = [s.position for s in summary.skipped]
    assert len(positions) == len(set(positions)), positions
    assert (summary.skipped[0].position, summary.skipped[0].held_behind) == (refused + 1, None)
