""":class:`projections.replay_ranges.BatchRanges` driven as the replays drive it, against a
model batch: handlers failing at some events, writes refused at others (found only at a
range's end when it holds more than that event). Whatever the failures: it ends; every
other event is committed exactly once, in order; each failing or refused event is held
exactly once; the first one held is the earliest (a strict replay stops there); and the
events attempted stay within a small multiple of the batch."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.replay_ranges import BatchRanges


def _drive(size: int, failing: set[int], refused: set[int], hint: int | None) -> dict:
    ranges = BatchRanges(size, hint)
    held: list[int] = []
    committed: list[int] = []
    attempted = attempts = 0
    while ranges:
        attempts += 1
        assert attempts <= 10 * size + 10, "does not end"
        start, end = ranges.take()
        assert 0 <= start < end <= size
        attempted += end - start
        due = [i for i in range(start, end) if i not in held]
        failed_at = next((i for i in due if i in failing), None)
        if failed_at is None and len(range(start, end)) == 1 and due and due[0] in refused:
            failed_at = due[0]  # a refused write of the one event: its failure
        if failed_at is not None:
            if ranges.failed(start, end, failed_at):
                held.append(failed_at)
            continue
        if any(i in refused for i in due):
            ranges.refused(start, end)
            continue
        ranges.committed()
        committed += due
    return {"held": held, "committed": committed, "attempted": attempted, "attempts": attempts}


@st.composite
def _batches(draw: st.DrawFn) -> tuple[int, set[int], set[int], bool]:
    size = draw(st.integers(1, 400))
    indices = st.integers(0, size - 1)
    failing = draw(st.sets(indices, max_size=max(1, size // 3)))
    refused = draw(st.sets(indices, max_size=8)) - failing
    return size, failing, refused, draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(_batches())
def test_every_event_is_committed_or_held_once_in_order(
    batch: tuple[int, set[int], set[int], bool],
) -> None:
    size, failing, refused, hinted = batch
    hint = min(failing) if hinted and failing else None
    found = _drive(size, failing, refused, hint)
    bad = failing | refused
    assert found["committed"] == [i for i in range(size) if i not in bad]
    assert sorted(found["held"]) == sorted(bad)
    if bad:
        assert found["held"][0] == min(bad)
    # Each failure costs a few ranges; each refused write a search by halves.
    log = math.ceil(math.log2(size + 1))
    assert found["attempts"] <= 3 + len(failing) * (4 + log) + len(refused) * (3 + 3 * log)
    assert found["attempted"] <= 6 * size + len(refused) * 2 * size


def test_failures_spread_through_a_large_batch_attempt_it_about_five_times() -> None:
    size = 100_000
    failing = set(range(500, size, 1_000))
    found = _drive(size, failing, set(), min(failing))
    assert found["committed"] == [i for i in range(size) if i not in failing]
    assert found["attempted"] <= 5 * size, found["attempted"]


def test_failures_at_every_other_event_stay_bounded_too() -> None:
    size = 3_000
    failing = set(range(0, size, 2))
    found = _drive(size, failing, set(), None)
    assert found["held"] == sorted(failing)
    assert found["attempted"] <= 5 * size, found["attempted"]


def test_a_refused_write_of_one_event_is_not_halved_into_empty_ranges() -> None:
    """The attempts raise a one-event refusal as its event's HandlerError; a caller that
    broke that rule gets an error, not an endless loop over empty ranges."""
    ranges = BatchRanges(3)
    assert ranges.take() == (0, 3)
    ranges.refused(0, 3)
    assert ranges.take() == (0, 1)
    with pytest.raises(ValueError, match=r"range \[0, 1\) cannot be narrowed down"):
        ranges.refused(0, 1)
