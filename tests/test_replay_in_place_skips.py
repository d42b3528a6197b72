"""An in-place replay with ``--skip-errors`` skips the failing event alone: the live lanes
applied the later events of its aggregate after it, so they are applied again after it, and
the aggregate ends at its newest state. Held behind it as a rebuild holds them (to be
parked at a swap an in-place replay does not have), they left the aggregate served at its
state before the skipped event, with nothing parked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from projections.api import Event, on
from projections.replay import ReplayOptions
from tests.cli_helpers import run_cli
from tests.document_fixtures import DocLastDeposit
from tests.document_replay_helpers import Docs, deposits, docs
from tests.replay_helpers import EVENTS, Pipeline, pipeline_config, query

__all__ = ["docs"]  # the fixture

_LIMIT = 990  # deposits of this amount or more are refused once the live model holds them

_REFUSE = {
    "postgresql": [
        f"ALTER TABLE last_deposit ADD CONSTRAINT small CHECK (amount < {_LIMIT}) NOT VALID"
    ],
    "sqlite": [
        f"CREATE TRIGGER small_{when} BEFORE {when} ON last_deposit WHEN NEW.amount >= {_LIMIT} "
        "BEGIN SELECT RAISE(ABORT, 'amount too large'); END"
        for when in ("INSERT", "UPDATE")
    ],
}


def _refused_then_more() -> set[str]:
    """The accounts with a refused deposit followed by later deposits of theirs."""
    last = {account: payload for _, account, _, payload in EVENTS}
    return {a for _, a, _, p in EVENTS if p["amount"] >= _LIMIT and last[a] is not p}


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_an_in_place_skip_leaves_its_aggregate_at_its_newest_state(
    make_pipeline: Callable[[str], Pipeline], kind: str
) -> None:
    assert _refused_then_more(), "the events need an account refused before its last deposit"
    p = make_pipeline(kind)
    p.feed("bank", EVENTS)
    before = query(p, "SELECT account, amount, seq FROM last_deposit ORDER BY 1")
    for statement in _REFUSE[kind]:
        p.execute(statement)

    options = ReplayOptions(from_position=0, skip_errors=True)
    summary = p.replayer("last_deposit", batch=1).run(options)

    assert query(p, "SELECT account, amount, seq FROM last_deposit ORDER BY 1") == before
    assert query(p, "SELECT count(*) FROM rm_parked_events") == [(0,)]
    assert query(p, "SELECT count(*) FROM rm_blocked_aggregates") == [(0,)]
    assert summary.skipped and all(s.held_behind is None for s in summary.skipped)
    assert {s.aggregate_id for s in summary.skipped} >= _refused_then_more()
    assert all("replay: handler failed" in s.error for s in summary.skipped)


def test_the_cli_says_in_place_skips_are_not_parked(pg: Pipeline, tmp_path: Path) -> None:
    pg.feed("bank", EVENTS)
    before = query(pg, "SELECT account, amount, seq FROM last_deposit ORDER BY 1")
    for statement in _REFUSE["postgresql"]:
        pg.execute(statement)
    config = str(pipeline_config(tmp_path, pg))
    command = ["replay", "last_deposit", "--from-position", "0", "--skip-errors"]

    result = run_cli([*command, "--batch-size", "1", "--yes", "--config", config])

    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "(not parked: each stays as the live lanes applied it)" in said, said
    assert "now parked" not in said and "held:" not in said, said
    assert query(pg, "SELECT account, amount, seq FROM last_deposit ORDER BY 1") == before


class _FailingAt(DocLastDeposit):
    """Fails (once the live model holds them) at the positions of :attr:`failing`."""

    failing: frozenset[int] = frozenset()

    @on("bank", "Deposited")
    def deposited(self, event: Event[dict], tx: Any) -> None:
        if event.position in self.failing:
            raise RuntimeError("not any more")
        super().deposited(event, tx)


def test_an_in_place_document_skip_leaves_its_aggregate_at_its_newest_state(docs: Docs) -> None:
    events = deposits(80, 4, seed=8)
    failing = next(i for i, e in enumerate(events) if i > 10 and e[0] == "acct-1")
    assert any(e[0] == "acct-1" for e in events[failing + 1 :])
    docs.feed(events)  # live: every event applied
    before = docs.documents("doc_last_deposit")
    projection = _FailingAt()
    projection.failing = frozenset({failing + 1})  # positions start at 1
    docs.projections["doc_last_deposit"] = projection

    options = ReplayOptions(from_position=0, skip_errors=True)
    summary = docs.replayer("doc_last_deposit", batch=1).run(options)

    assert docs.documents("doc_last_deposit") == before
    assert [(s.position, s.held_behind) for s in summary.skipped] == [(failing + 1, None)]
    assert docs.store.database["rm_parked_events"].count_documents({}) == 0
