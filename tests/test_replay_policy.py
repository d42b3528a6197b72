"""The replay's error policy (``--skip-errors``): what it holds and skips, and undoing a
transaction's share of it when the transaction is rolled back or started again."""

from __future__ import annotations

from outbox.envelope import Envelope
from projections.replay_policy import ErrorPolicy, HandlerError


def test_a_replay_transaction_started_again_forgets_the_holds_it_merged() -> None:
    """A replay batch that is started again (an OutOfOrder row lock, a deadlock, a failed
    event) is undone to the error policy's mark: the holds an event naming no tenant merged
    in it too, or an event of a tenant the next attempt meets before that event is held
    behind the merged hold (skipped), where the first attempt applied it."""
    policy = ErrorPolicy("totals", skip_errors=True, in_place=True)

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
