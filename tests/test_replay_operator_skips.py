"""A replay honours ``readmodel parked skip``: an event an operator skipped is left out of a
rebuild and of an in-place replay, as the live model left it out, and the later events of its
aggregate are applied after it as the live lanes applied them; ``--apply-skipped`` applies it
again (a rebuild only), marking its entry ``replayed``. On PostgreSQL and SQLite stores, and
a MongoDB document store.

Before, a rebuild applied skipped events again: a handler still failing on one stopped the
rebuild (or, with ``--skip-errors``, parked it again and blocked its aggregate), and a handler
meanwhile changed to accept it put it into the rebuilt model, which the live model never had.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from projections.document_replay import DocumentReplayer
from projections.engine import ProjectionEngine
from projections.mongo_store import MongoStore
from projections.replay import Replayer
from projections.replay_types import ReplayError, ReplayOptions, ReplayRefused
from tests.cli_helpers import run_cli
from tests.operator_skip_fixtures import EVENTS, LIVE, OpSkipDocs, OpSkipLedger
from tests.operator_skip_helpers import (
    cli_config,
    doc_rows,
    sql_rows,
    sql_skipped,
    statuses,
)
from tests.projection_fixtures import append_events, append_tenant_events, engine_on


def test_a_rebuild_leaves_out_an_event_an_operator_skipped_while_its_handler_still_fails(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the strict rebuild stopped at shop:2 (ReplayError)."""
    with sql_skipped(store_url, monkeypatch) as (log, store, engine, projection):
        summary = Replayer(engine.reader, projection, store).run(ReplayOptions())

        assert summary.skipped_by_operator == 1 and summary.skipped == []
        assert sql_rows(store) == (LIVE, {"a1": 30, "a2": 7, "b1": 1, "b2": 2})
        assert statuses(engine, projection.name) == {"shop:2": "skipped", "shop:4": "retried"}
        assert engine.parked(projection.name) == []
        more = [("a1", "Deposited", {"amount": 40})]  # the live lanes go on from the swap
        append_events(log, more, "shop", "account", after=len(EVENTS))
        engine.catch_up(deadline=30)
        assert sql_rows(store)[1]["a1"] == 40


def test_a_rebuild_with_skip_errors_does_not_park_a_skipped_event_again(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: shop:2 failed again, was parked again (a new failure) and held shop:4."""
    with sql_skipped(store_url, monkeypatch) as (_, store, engine, projection):
        options = ReplayOptions(skip_errors=True)
        summary = Replayer(engine.reader, projection, store).run(options)

        assert summary.skipped == [] and summary.skipped_by_operator == 1
        assert sql_rows(store)[0] == LIVE
        assert engine.parked(projection.name) == []


def test_a_fixed_handler_does_not_put_a_skipped_event_into_the_rebuilt_model(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the rebuilt model held shop:2, which the live model never had."""
    with sql_skipped(store_url, monkeypatch) as (_, store, engine, projection):
        monkeypatch.delenv("READMODEL_TEST_POISON")
        Replayer(engine.reader, projection, store).run(ReplayOptions())

        assert sql_rows(store) == (LIVE, {"a1": 30, "a2": 7, "b1": 1, "b2": 2})
        assert statuses(engine, projection.name)["shop:2"] == "skipped"


def test_apply_skipped_applies_it_in_order_and_marks_it_replayed(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sql_skipped(store_url, monkeypatch) as (_, store, engine, projection):
        replayer = Replayer(engine.reader, projection, store)
        with pytest.raises(ReplayError, match="shop:2"):  # still failing: strict stops
            replayer.run(ReplayOptions(apply_skipped=True))
        assert sql_rows(store)[0] == LIVE
        monkeypatch.delenv("READMODEL_TEST_POISON")

        summary = replayer.run(ReplayOptions(apply_skipped=True))

        assert summary.skipped_by_operator == 0
        assert sql_rows(store) == (sorted([*LIVE, "shop:2"]), {"a1": 30, "a2": 7, "b1": 1, "b2": 2})
        assert statuses(engine, projection.name)["shop:2"] == "replayed"
        summary = replayer.run(ReplayOptions())  # no longer skipped: applied as any other
        assert summary.skipped_by_operator == 0 and "shop:2" in sql_rows(store)[0]


def test_apply_skipped_with_skip_errors_leaves_a_still_failing_event_skipped(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: shop:2, skipped by the operator and still failing, was parked again and held
    its aggregate: the later events of a1 (shop:4, then the live ones) waited behind it,
    undoing the operator's release. Now it stays skipped and the summary counts it."""
    with sql_skipped(store_url, monkeypatch) as (log, store, engine, projection):
        options = ReplayOptions(skip_errors=True, apply_skipped=True)
        summary = Replayer(engine.reader, projection, store).run(options)

        assert summary.skipped == [] and summary.skipped_by_operator == 1
        assert sql_rows(store) == (LIVE, {"a1": 30, "a2": 7, "b1": 1, "b2": 2})
        assert statuses(engine, projection.name) == {"shop:2": "skipped", "shop:4": "retried"}
        assert engine.parked(projection.name) == []
        more = [("a1", "Deposited", {"amount": 40})]  # a1 is not held: applied live
        append_events(log, more, "shop", "account", after=len(EVENTS))
        engine.catch_up(deadline=30)
        assert sql_rows(store)[1]["a1"] == 40 and engine.parked(projection.name) == []


def test_in_place_leaves_out_a_skipped_event_and_refuses_apply_skipped(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: in place from 0 with the handler fixed wrote shop:2 into the live tables."""
    with sql_skipped(store_url, monkeypatch) as (_, store, engine, projection):
        monkeypatch.delenv("READMODEL_TEST_POISON")
        replayer = Replayer(engine.reader, projection, store)
        summary = replayer.run(ReplayOptions(from_position=0))

        assert sql_rows(store) == (LIVE, {"a1": 30, "a2": 7, "b1": 1, "b2": 2})
        assert summary.skipped_by_operator == 1
        assert replayer.plan(ReplayOptions(from_position=1)).skipped_by_operator == 1
        assert replayer.plan(ReplayOptions(from_position=2)).skipped_by_operator == 0
        with pytest.raises(ReplayRefused, match="--apply-skipped"):
            replayer.run(ReplayOptions(from_position=0, apply_skipped=True))
        assert statuses(engine, projection.name)["shop:2"] == "skipped"


def test_an_event_skipped_during_the_rebuild_that_it_applied_is_marked_replayed(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parked when the rebuild started (so re-attempted), skipped before its swap: the rebuilt
    model has it, its entry says so."""
    monkeypatch.setenv("READMODEL_TEST_POISON", "1")
    projection = OpSkipLedger()
    with engine_on(store_url, [projection], max_attempts=1) as (log, store, engine):
        append_events(log, EVENTS, "shop", "account", after=0)
        engine.catch_up(deadline=30)
        first = engine.parked(projection.name)[0]
        monkeypatch.delenv("READMODEL_TEST_POISON")

        class SkipBeforeSwap(Replayer):
            def _swap(self, *args: Any) -> None:
                store.skip_parked(first.id)
                super()._swap(*args)

        SkipBeforeSwap(engine.reader, projection, store).run(ReplayOptions())

        assert "shop:2" in sql_rows(store)[0]
        assert set(statuses(engine, projection.name).values()) == {"replayed"}


def test_a_tenant_s_skipped_event_is_left_out_of_its_member_source_only(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members of a group number their positions apart: acme's skipped pos:acme:2 leaves
    globex's pos:globex:2 applied, by a rebuild as in place (--source pos, --tenant)."""
    monkeypatch.setenv("READMODEL_TEST_POISON", "1")
    projection = OpSkipLedger()
    with engine_on(store_url, [projection], max_attempts=1) as (log, store, engine):
        acme = [("a1", "Deposited", {"amount": 10}), ("a1", "Deposited", {"amount": 20})]
        acme[1][2]["poison"] = True
        acme.append(("a1", "Deposited", {"amount": 30}))
        append_tenant_events(log, [("acme", *e) for e in acme], "pos:acme")
        globex = [("g1", "Deposited", {"amount": 1}), ("g1", "Deposited", {"amount": 2})]
        append_tenant_events(log, [("globex", *e) for e in globex], "pos:globex")
        engine.catch_up(deadline=30)
        (poison, held) = engine.parked(projection.name)
        assert (poison.source, poison.position, poison.tenant) == ("pos:acme", 2, "acme")
        engine.skip(poison)
        live = ["pos:acme:1", "pos:acme:3", "pos:globex:1", "pos:globex:2"]
        assert sql_rows(store) == (live, {"a1": 30, "g1": 2})
        monkeypatch.delenv("READMODEL_TEST_POISON")
        replayer = Replayer(engine.reader, projection, store)

        rebuilt = replayer.run(ReplayOptions())
        assert sql_rows(store) == (live, {"a1": 30, "g1": 2})
        acme = replayer.run(ReplayOptions(from_position=0, source="pos", tenant="acme"))
        assert sql_rows(store) == (live, {"a1": 30, "g1": 2})
        globex = replayer.run(ReplayOptions(from_position=0, source="pos:globex"))
        assert sql_rows(store) == (live, {"a1": 30, "g1": 2})
        counts = [s.skipped_by_operator for s in (rebuilt, acme, globex)]
        assert counts == [1, 1, 0] and globex.events == 2
        assert statuses(engine, projection.name)["pos:acme:2"] == "skipped"


def test_the_cli_summary_names_the_events_skipped_by_the_operator(
    database_for: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = database_for("postgresql")
    with sql_skipped(url, monkeypatch) as (_, store, engine, projection):
        config = cli_config(tmp_path, url)
        planned = run_cli(["replay", projection.name, "--dry-run", "--config", config])
        assert planned.exit_code == 0, planned.output
        said = " ".join(planned.stdout.split())
        assert "1 event skipped by operator (parked skip) will be left out" in said
        result = run_cli(["replay", projection.name, "--yes", "--config", config])
        assert result.exit_code == 0, result.output
        said = " ".join(result.stdout.split())
        assert "1 event skipped by operator (parked skip): left out" in said
        assert "--apply-skipped applies them" in said

        failed = run_cli(["replay", projection.name, "--yes", "--apply-skipped", "-c", config])
        assert failed.exit_code == 1 and "shop:2" in failed.stderr, failed.output

        still = ["replay", projection.name, "--yes", "--apply-skipped", "--skip-errors"]
        kept = run_cli([*still, "--config", config])
        assert kept.exit_code == 0, kept.output
        said = " ".join(kept.stdout.split())
        assert "1 event skipped by operator (parked skip) still failed: left out, still" in said
        assert "skipped 1 events" not in said and "now parked" not in said, said

        in_place = ["replay", projection.name, "--from-position", "0", "--apply-skipped"]
        refused = run_cli([*in_place, "--yes", "--config", config])
        assert refused.exit_code == 2 and "--apply-skipped" in refused.stderr, refused.output

        monkeypatch.delenv("READMODEL_TEST_POISON")
        done = run_cli(["replay", projection.name, "--yes", "--apply-skipped", "-c", config])
        assert done.exit_code == 0 and "skipped by operator" not in done.stdout, done.output
        assert "shop:2" in sql_rows(store)[0]
        listed = run_cli(["parked", "list", "--all", "--json", "--config", config])
        assert listed.exit_code == 0, listed.output
        assert '"status": "replayed"' in listed.stdout and '"skipped"' not in listed.stdout


# -- a MongoDB document store ------------------------------------------------------------


def test_a_document_rebuild_and_in_place_replay_leave_out_a_skipped_event(
    docs_skipped: tuple[ProjectionEngine, MongoStore, OpSkipDocs],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the strict rebuild stopped at shop:2; fixed, it wrote shop:2."""
    engine, store, projection = docs_skipped

    def replayer() -> DocumentReplayer:
        return DocumentReplayer(engine.reader, projection, store, retire_after=0.0)

    assert replayer().plan(ReplayOptions()).skipped_by_operator == 1
    assert replayer().plan(ReplayOptions(from_position=2)).skipped_by_operator == 0
    summary = replayer().run(ReplayOptions())
    assert summary.skipped_by_operator == 1 and summary.skipped == []
    assert doc_rows(store, projection) == (LIVE, {"a1": 30, "a2": 7, "b1": 1, "b2": 2})
    monkeypatch.delenv("READMODEL_TEST_POISON")
    replayer().run(ReplayOptions())
    replayer().run(ReplayOptions(from_position=0))
    assert doc_rows(store, projection)[0] == LIVE
    assert statuses(engine, projection.name)["shop:2"] == "skipped"


def test_a_document_rebuild_applies_skipped_events_when_asked(
    docs_skipped: tuple[ProjectionEngine, MongoStore, OpSkipDocs],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, store, projection = docs_skipped
    monkeypatch.delenv("READMODEL_TEST_POISON")
    replayer = DocumentReplayer(engine.reader, projection, store, retire_after=0.0)

    summary = replayer.run(ReplayOptions(apply_skipped=True))

    assert summary.skipped_by_operator == 0
    assert doc_rows(store, projection) == (
        sorted([*LIVE, "shop:2"]),
        {"a1": 30, "a2": 7, "b1": 1, "b2": 2},
    )
    assert statuses(engine, projection.name)["shop:2"] == "replayed"


def test_a_document_rebuild_with_skip_errors_leaves_a_still_failing_skipped_event_skipped(
    docs_skipped: tuple[ProjectionEngine, MongoStore, OpSkipDocs],
) -> None:
    """Before: shop:2 was parked again and held a1 (shop:4 parked behind it)."""
    engine, store, projection = docs_skipped
    replayer = DocumentReplayer(engine.reader, projection, store, retire_after=0.0)

    summary = replayer.run(ReplayOptions(skip_errors=True, apply_skipped=True))

    assert summary.skipped == [] and summary.skipped_by_operator == 1
    assert doc_rows(store, projection) == (LIVE, {"a1": 30, "a2": 7, "b1": 1, "b2": 2})
    assert statuses(engine, projection.name)["shop:2"] == "skipped"
    assert engine.parked(projection.name) == []
