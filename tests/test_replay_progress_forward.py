"""A rebuild's progress never goes back: the events it held behind a failed event, applied
once an operator skipped that event while it ran (after the rebuild had gone past them),
are reported at the position it had reached, not at their own. On PostgreSQL and SQLite
stores, and a MongoDB document store.

Before, the progress hook was given shop:7 after shop:8 (the bar's position stepped back)."""

from __future__ import annotations

from typing import Any

import pytest

from projections.document_replay import DocumentReplayer
from projections.engine import ProjectionEngine
from projections.mongo_store import MongoStore
from projections.replay import Replayer
from projections.replay_types import ReplayHooks, ReplayOptions
from tests.operator_skip_fixtures import EVENTS, OpSkipDocs
from tests.operator_skip_helpers import LATE, Once, park_late_events, sql_skipped, statuses
from tests.projection_fixtures import append_events

AFTER_LATE = [("a2", "Deposited", {"amount": 8})]
"""shop:8, of another aggregate: applied live and by the rebuild after shop:7."""


class Positions(ReplayHooks):
    """The positions the progress hook is given, per source, in order."""

    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        self.seen.setdefault(source, []).append(position)


def _logged_after_late(engine: ProjectionEngine, log: Any, name: str, mp: Any) -> Any:
    """LATE parked live (shop:6 still failing, shop:7 held), then shop:8 applied live;
    returns shop:6's entry."""
    late = park_late_events(engine, log, name, mp, fixed=False)
    append_events(log, AFTER_LATE, "shop", "account", after=len(EVENTS) + len(LATE))
    engine.catch_up(deadline=30)
    (entry,) = [p for p in engine.parked(name) if p.id == late]
    return entry


def _assert_forward(positions: Positions) -> None:
    for source, seen in positions.seen.items():
        assert seen == sorted(seen), (source, seen)
    assert positions.seen["shop"][-1] == len(EVENTS) + len(LATE) + len(AFTER_LATE)


def test_held_events_applied_after_a_skip_do_not_take_the_progress_back(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sql_skipped(store_url, monkeypatch) as (log, store, engine, projection):
        entry = _logged_after_late(engine, log, projection.name, monkeypatch)
        hook = Once(lambda: store.skip_parked(entry.id))  # shop:7 stays parked live

        class SkipAfterThePass(Replayer):
            def _fill(self, source: str, *args: Any) -> int:
                done = super()._fill(source, *args)
                if source == "shop":
                    hook()
                return done

        positions = Positions()
        replayer = SkipAfterThePass(engine.reader, projection, store, hooks=positions)
        replayer.run(ReplayOptions(skip_errors=True))

        assert hook.done
        assert statuses(engine, projection.name)["shop:7"] == "replayed"
        _assert_forward(positions)


def test_a_document_rebuild_does_not_take_the_progress_back(
    docs_skipped: tuple[ProjectionEngine, MongoStore, OpSkipDocs],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, store, projection = docs_skipped
    entry = _logged_after_late(engine, engine.reader.log, projection.name, monkeypatch)
    hook = Once(lambda: store.skip_parked(entry.id))

    class SkipAfterFailing(DocumentReplayer):
        def _shadow_batch(self, source: str, events: list[Any], *args: Any, **kw: Any) -> None:
            super()._shadow_batch(source, events, *args, **kw)
            if source == "shop" and events[-1].position >= 8:  # once it went past shop:7
                hook()

    positions = Positions()
    replayer = SkipAfterFailing(engine.reader, projection, store, retire_after=0.0, hooks=positions)
    replayer.run(ReplayOptions(skip_errors=True))

    assert hook.done
    assert statuses(engine, projection.name)["shop:7"] == "replayed"
    _assert_forward(positions)
