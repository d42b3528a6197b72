"""A document rebuild batch holding a write the server refuses (found only when the batch is
written: a duplicate code under a unique index) before a handler that fails at once stops at
the first of them, the refused write, as the table rebuild does (on a real MongoDB-wire
server)."""

from __future__ import annotations

import pytest

from projections.replay_types import ReplayError, ReplayOptions
from tests.document_replay_helpers import Docs, deposits, docs, rebuilds_refusing_taken_codes

__all__ = ["docs"]  # the fixture


def test_a_refused_document_before_a_failing_handler_stops_the_rebuild_at_it(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = deposits(60, 4, seed=21)
    refused = next(i for i, e in enumerate(events) if i > 20 and e[0] == "acct-1")
    events[refused] = ("acct-1", "Deposited", {**events[refused][2], "taken": True})
    failing = next(i for i, e in enumerate(events) if i > refused and e[0] == "acct-2")
    docs.feed(events)  # live: all applied (no unique index there)
    rebuilds_refusing_taken_codes(monkeypatch)
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-2")  # the handler fails from now on
    monkeypatch.setenv("READMODEL_TEST_FAIL_FROM_SEQ", str(events[failing][2]["seq"]))
    with pytest.raises(ReplayError) as failure:
        docs.replayer(batch=1000).run(ReplayOptions())
    assert failure.value.event.position == refused + 1, str(failure.value)
