"""The replay's error policy (``--skip-errors``): what it holds and skips, and undoing a
transaction's share of it when the transaction is rolled back or started again."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from outbox.envelope import Envelope
from projections.replay_policy import ErrorPolicy, HandlerError


def test_a_replay_transaction_started_again_forgets_the_holds_it_merged() -> None:
    """A replay batch that is started again (an OutOfOrder row lock, a deadlock, a failed
    event) is undone to the error policy's mark: the holds an event naming no tenant merged
    in it too, or an event of a tenant the next attempt meets before that event is held
    behind the merged hold (skipped), where the first attempt applied it. (A rebuild's
    policy: in place, only a failing event itself is skipped, nothing held behind it.)"""
    policy = ErrorPolicy("totals", skip_errors=True, in_place=False)

    def event(tenant: str | None, position: int) -> Envelope:
        return Envelope(
            event_id=f"e{position}",
            source="bank",
            tenant=tenant,
            aggregate_type="order",
            aggregate_id="o1",
            event_type="Placed",
            payload={},
            position=position,
        )

    policy.fail(HandlerError(event("acme", 5), RuntimeError("acme")))
    policy.fail(HandlerError(event("globex", 10), RuntimeError("globex")))
    mark = policy.mark()
    attempt = [event("acme", 5), event("globex", 7), event("globex", 10), event(None, 12)]
    first = [e.position for e in attempt if policy.holds(e)]
    assert first == [5, 10, 12]  # the event naming no tenant merged the two holds
    policy.undo(mark)
    assert [(s.position, s.tenant) for s in policy.skipped] == [(5, "acme"), (10, "globex")]
    again = [e.position for e in attempt if policy.holds(e)]
    assert again == first
    assert [(s.position, s.held_behind, s.tenant) for s in policy.skipped] == [
        (5, None, ""),
        (10, None, ""),
        (12, 5, ""),
    ]


@st.composite
def _steps(draw: st.DrawFn) -> list[tuple[str, str | None, str]]:
    tenants = st.sampled_from([None, "acme", "globex"])
    aggregates = st.sampled_from(["o1", "o2", "o3"])
    kinds = st.sampled_from(["fail", "holds", "holds", "mark", "undo"])
    return draw(st.lists(st.tuples(kinds, tenants, aggregates), max_size=60))


@settings(max_examples=300, deadline=None)
@given(_steps())
def test_undo_restores_the_holds_and_skips_of_its_mark(
    steps: list[tuple[str, str | None, str]],
) -> None:
    """Holds are undone change by change (a copy per mark cost a replay skipping many events
    time growing with their square): after any fails, merges and looks, undoing to a mark
    leaves exactly what the policy held and had skipped when the mark was taken."""
    policy = ErrorPolicy("totals", skip_errors=True, in_place=False)
    marks: list[tuple[Any, dict, list]] = []
    for position, (kind, tenant, aggregate) in enumerate(steps, start=1):
        event = Envelope(
            event_id=f"e{position}",
            source="bank",
            tenant=tenant,
            aggregate_type="order",
            aggregate_id=aggregate,
            event_type="Placed",
            payload={},
            position=position,
        )
        if kind == "fail" and not policy.holds(event):
            policy.fail(HandlerError(event, RuntimeError("boom")))
        elif kind == "holds":
            policy.holds(event)
        elif kind == "mark":
            held = {source: dict(holds) for source, holds in policy.held.items() if holds}
            marks.append((policy.mark(), held, list(policy.skipped)))
        elif kind == "undo" and marks:
            mark, held, skipped = marks.pop()
            policy.undo(mark)
            assert {s: dict(h) for s, h in policy.held.items() if h} == held
            assert policy.skipped == skipped
    # An event naming no tenant still finds every tenant's hold of its aggregate.
    for aggregate in ["o1", "o2", "o3"]:
        keys = [k for k in policy.held.get("bank", {}) if k.aggregate_id == aggregate]
        if any(k.tenant for k in keys):
            looked = Envelope(
                event_id="last",
                source="bank",
                tenant=None,
                aggregate_type="order",
                aggregate_id=aggregate,
                event_type="Placed",
                payload={},
                position=len(steps) + 1,
            )
            assert policy.holds(looked)
