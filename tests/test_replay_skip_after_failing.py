"""An operator's skip wins over a rebuild's ``--skip-errors``: an event the rebuild failed
(and skipped, to park it at the swap) that an operator skips meanwhile (``readmodel parked
skip``) stays ``skipped``, and the events the rebuild held behind it are applied, as the
live lanes applied them after the skip. Nothing is parked, nothing lost or applied twice,
and the summary counts it as skipped by the operator. On PostgreSQL and SQLite stores, and
a MongoDB document store.

Before, the swap parked it again (its entry back to ``parked``), with the events held behind
it, and blocked its aggregate: the rebuilt model lacked the events the live model had
applied after the skip (a1's last amount 50 -> 30), and the entry the operator had skipped
was parked again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from projections.document_replay import DocumentReplayer
from projections.engine import ProjectionEngine
from projections.mongo_store import MongoStore
from projections.replay import Replayer
from projections.replay_types import ReplayOptions
from projections.store import Lane
from tests.cli_helpers import run_cli
from tests.operator_skip_fixtures import EVENTS, OpSkipDocs
from tests.operator_skip_helpers import (
    AMOUNTS,
    LATE,
    WITH_LATE,
    Once,
    cli_config,
    doc_rows,
    park_late_events,
    sql_rows,
    sql_skipped,
    statuses,
)
from tests.projection_fixtures import append_events

BATCHES = [
    pytest.param(None, id="in-the-swap"),  # one pass: the swap's transaction reads the skip
    pytest.param(1, id="in-a-later-pass"),  # more passes: the next one reads it
]
SKIPPED = {"shop:2": "skipped", "shop:4": "retried", "shop:6": "skipped", "shop:7": "retried"}
APPLIED = {"shop": 5, "bank": 2}  # shop 1, 3, 4, 5, 7 and bank 1, 2: each once


def _counted(applied: dict[str, int]) -> dict[str, int]:
    """The sources with events applied (the group ``pos`` has none)."""
    return {source: count for source, count in applied.items() if count}


def _options(apply_skipped: bool) -> ReplayOptions:
    return ReplayOptions(skip_errors=True, apply_skipped=apply_skipped)


@pytest.mark.parametrize("apply_skipped", [False, True], ids=["", "apply-skipped"])
@pytest.mark.parametrize("batch_size", BATCHES)
def test_an_event_the_rebuild_failed_then_an_operator_skipped_stays_skipped(
    store_url: str, monkeypatch: pytest.MonkeyPatch, batch_size: int | None, apply_skipped: bool
) -> None:
    """shop:6 still fails: the rebuild's first pass skips it (shop:7 held behind it); then
    the operator skips it (shop:7 applied live)."""
    with sql_skipped(store_url, monkeypatch) as (log, store, engine, projection):
        late = park_late_events(engine, log, projection.name, monkeypatch, fixed=False)
        (entry,) = [p for p in engine.parked(projection.name) if p.id == late]
        hook = Once(lambda: engine.skip(entry))

        class SkipAfterFailing(Replayer):
            def _fill(self, source: str, *args: Any) -> int:  # after a source's pass
                done = super()._fill(source, *args)
                if source == "shop":
                    hook()
                return done

        replayer = SkipAfterFailing(engine.reader, projection, store, batch_size=batch_size)
        summary = replayer.run(_options(apply_skipped))

        assert hook.done
        assert sql_rows(store) == (WITH_LATE, AMOUNTS)
        assert statuses(engine, projection.name) == SKIPPED
        assert engine.parked(projection.name) == []
        assert summary.skipped == [] and summary.skipped_by_operator == 2
        assert _counted(summary.applied) == APPLIED
        assert summary.checkpoints["shop"] == len(EVENTS) + len(LATE)
        more = [("a1", "Deposited", {"amount": 70})]  # a1 is not blocked: the lanes go on
        append_events(log, more, "shop", "account", after=len(EVENTS) + len(LATE))
        engine.catch_up(deadline=30)
        assert sql_rows(store)[1]["a1"] == 70


def test_a_skip_committed_once_the_swap_locked_the_lanes_wins_over_the_rebuild(
    database_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild failed shop:6; the operator's skip commits once the swap locked the live
    lanes (the store's skip: shop:7 stays parked live, the rebuild applies it and the swap
    marks it ``replayed``). PostgreSQL only: on SQLite no skip commits during the swap."""
    url = database_for("postgresql")
    with sql_skipped(url, monkeypatch) as (log, store, engine, projection):
        late = park_late_events(engine, log, projection.name, monkeypatch, fixed=False)
        lock_lane = store.lock_lane
        skipped: list[int] = []

        def lock_then_skip(conn: sa.Connection, lane: Lane) -> int:
            found = lock_lane(conn, lane)
            if not skipped:  # the swap's first lane locked
                skipped.append(late)
                store.skip_parked(late)  # its own transaction, committed at once
            return found

        class SkipInTheSwap(Replayer):
            def _swap(self, *args: Any) -> None:
                monkeypatch.setattr(store, "lock_lane", lock_then_skip)
                super()._swap(*args)

        summary = SkipInTheSwap(engine.reader, projection, store).run(_options(False))

        assert skipped == [late]
        assert sql_rows(store) == (WITH_LATE, AMOUNTS)
        assert statuses(engine, projection.name) == {**SKIPPED, "shop:7": "replayed"}
        assert engine.parked(projection.name) == []
        assert summary.skipped == [] and summary.skipped_by_operator == 2
        assert _counted(summary.applied) == APPLIED


def test_apply_skipped_parks_a_skip_it_read_at_the_start_held_behind_a_new_failure(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only skips read after the rebuild started overrule it: shop:2, skipped before it,
    which ``--apply-skipped`` is to apply again, is held behind shop:1 (failing now) and
    parked with it, to be applied when shop:1 is retried."""
    with sql_skipped(store_url, monkeypatch) as (_, store, engine, projection):
        handle = projection.handle

        def failing_at_shop_1(event: Any, tx: Any) -> None:
            if (event.source, event.position) == ("shop", 1):
                raise RuntimeError("shop:1 fails now")
            handle(event, tx)

        monkeypatch.setattr(projection, "handle", failing_at_shop_1)
        summary = Replayer(engine.reader, projection, store).run(_options(True))

        assert [(s.position, s.held_behind) for s in summary.skipped] == [
            (1, None),
            (2, 1),
            (4, 1),
        ]
        assert summary.skipped_by_operator == 0
        assert statuses(engine, projection.name) == {
            "shop:1": "parked",
            "shop:2": "parked",
            "shop:4": "parked",
        }


def test_the_cli_counts_it_as_skipped_by_the_operator_as_its_dry_run_does(
    database_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The summary line counts shop:6 with shop:2 (left out), none parked; a dry run after
    it plans to leave out the same two, and the replay it plans does."""
    url = database_for("postgresql")
    with sql_skipped(url, monkeypatch) as (log, store, engine, projection):
        late = park_late_events(engine, log, projection.name, monkeypatch, fixed=False)
        (entry,) = [p for p in engine.parked(projection.name) if p.id == late]
        hook = Once(lambda: engine.skip(entry))
        fill = Replayer._fill

        def fill_then_skip(self: Replayer, source: str, *args: Any) -> int:
            done = fill(self, source, *args)
            if source == "shop":
                hook()
            return done

        monkeypatch.setattr(Replayer, "_fill", fill_then_skip)
        config = cli_config(tmp_path, url)
        command = ["replay", projection.name, "--yes", "--skip-errors", "--config", config]
        result = run_cli(command)
        assert result.exit_code == 0, result.output
        said = " ".join(result.stdout.split())
        assert hook.done
        assert "2 events skipped by operator (parked skip): left out" in said, said
        assert "shop: 5 events, checkpoint 7" in said and "bank: 2 events" in said, said
        assert "now parked" not in said, said

        planned = run_cli(["replay", projection.name, "--dry-run", "--config", config])
        assert planned.exit_code == 0, planned.output
        said = " ".join(planned.stdout.split())
        assert "2 events skipped by operator (parked skip) will be left out" in said, said
        again = run_cli(command)
        assert again.exit_code == 0, again.output
        said = " ".join(again.stdout.split())
        assert "2 events skipped by operator (parked skip): left out" in said, said
        assert "shop: 5 events, checkpoint 7" in said, said
        assert sql_rows(store) == (WITH_LATE, AMOUNTS)


# -- a MongoDB document store ------------------------------------------------------------


@pytest.mark.parametrize("batch_size", BATCHES)
def test_a_document_rebuild_keeps_skipped_an_event_it_failed_before_the_skip(
    docs_skipped: tuple[ProjectionEngine, MongoStore, OpSkipDocs],
    monkeypatch: pytest.MonkeyPatch,
    batch_size: int | None,
) -> None:
    engine, store, projection = docs_skipped
    log = engine.reader.log
    late = park_late_events(engine, log, projection.name, monkeypatch, fixed=False)
    (entry,) = [p for p in engine.parked(projection.name) if p.id == late]
    hook = Once(lambda: engine.skip(entry))

    class SkipAfterFailing(DocumentReplayer):
        def _shadow_batch(self, source: str, events: list[Any], *args: Any, **kw: Any) -> None:
            super()._shadow_batch(source, events, *args, **kw)
            if source == "shop" and events[-1].position >= 6:  # once it failed shop:6
                hook()

    sizes = {} if batch_size is None else {"batch_size": batch_size}
    replayer = SkipAfterFailing(engine.reader, projection, store, retire_after=0.0, **sizes)
    summary = replayer.run(_options(False))

    assert hook.done
    assert doc_rows(store, projection) == (WITH_LATE, AMOUNTS)
    assert statuses(engine, projection.name) == SKIPPED
    assert engine.parked(projection.name) == []
    assert summary.skipped == [] and summary.skipped_by_operator == 2
    assert _counted(summary.applied) == APPLIED
