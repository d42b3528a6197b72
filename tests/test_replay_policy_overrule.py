"""An operator's skip overrules what a rebuild's error policy skipped (``--skip-errors``):
:meth:`ErrorPolicy.overrule` forgets the events an operator skipped since (the swap must not
park them again) and the hold of one that failed, handing back the events held behind it
to apply. A hold several tenants' failures merged stays while one of them is still skipped.
The replays that use it: tests/test_replay_skip_after_failing.py."""

from __future__ import annotations

from outbox.envelope import Envelope
from projections.replay_policy import ErrorPolicy, HandlerError


def event(position: int, tenant: str | None = None, aggregate: str = "o1") -> Envelope:
    return Envelope(
        event_id=f"e{position}",
        source="bank",
        tenant=tenant,
        aggregate_type="order",
        aggregate_id=aggregate,
        event_type="Placed",
        payload={},
        position=position,
    )


def skipped(policy: ErrorPolicy) -> list[int]:
    return [s.position for s in policy.skipped]


def rebuild_failing_at(*failing: Envelope) -> ErrorPolicy:
    policy = ErrorPolicy("totals", skip_errors=True, in_place=False)
    for failed in failing:
        policy.fail(HandlerError(failed, RuntimeError("poison")))
    return policy


def test_a_failed_event_an_operator_skipped_frees_its_aggregate() -> None:
    policy = rebuild_failing_at(event(5))
    assert [policy.holds(e) for e in (event(7), event(8, aggregate="o2"), event(9))] == [
        True,
        False,
        True,
    ]
    assert not policy.overruled({("bank", 6)})
    assert policy.overruled({("bank", 5)})

    assert policy.overrule({("bank", 5)}) == ({("bank", 5)}, {"bank": [7, 9]})
    assert policy.skipped == [] and not policy.holds(event(11))
    assert policy.overrule({("bank", 5)}) == (set(), {})  # nothing left to overrule


def test_a_held_event_an_operator_skipped_is_forgotten_and_the_hold_stays() -> None:
    policy = rebuild_failing_at(event(5))
    assert policy.holds(event(7)) and policy.holds(event(9))

    assert policy.overrule({("bank", 7)}) == ({("bank", 7)}, {})
    assert skipped(policy) == [5, 9] and policy.holds(event(11))
    gone, again = policy.overrule({("bank", 7), ("bank", 5)})
    assert gone == {("bank", 5)} and again == {"bank": [9, 11]}


def test_a_merged_hold_stays_until_every_failure_in_it_is_skipped() -> None:
    policy = rebuild_failing_at(event(5, "acme"), event(10, "globex"))
    assert policy.holds(event(12))  # naming no tenant: merges the two holds into one

    assert policy.overrule({("bank", 5)}) == ({("bank", 5)}, {})
    assert skipped(policy) == [10, 12] and policy.holds(event(14))
    gone, again = policy.overrule({("bank", 5), ("bank", 10)})
    assert gone == {("bank", 10)} and again == {"bank": [12, 14]}
    assert policy.skipped == [] and not policy.holds(event(15))


def test_in_place_nothing_is_overruled() -> None:
    policy = ErrorPolicy("totals", skip_errors=True, in_place=True)
    policy.fail(HandlerError(event(5), RuntimeError("poison")))
    assert not policy.overruled({("bank", 5)})
    assert policy.overrule({("bank", 5)}) == (set(), {}) and skipped(policy) == [5]
