"""A collection named like a generation of a document projection's collection
(``<collection>__g<n>``) that readmodel did not record in ``rm_generations`` (neither
retired by a swap nor being built) is a user's, or one an older readmodel left: a replay's
cleanup leaves it alone with a warning naming it, and ``readmodel replay P --cleanup
--drop-unmarked NAME`` drops it when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from outbox.errors import StoreError
from projections.document_generations import generation_of
from projections.replay_types import ReplayOptions, ReplayRefused
from tests.cli_helpers import docs_config, run_cli
from tests.document_replay_helpers import PROJECTIONS, Docs, deposits, docs, totals

__all__ = ["docs"]  # the fixture

WAY_OUT = "readmodel replay doc_totals --cleanup --drop-unmarked doc_totals__g1"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _two_rebuilds(docs: Docs) -> None:
    docs.replayer().run(ReplayOptions())
    docs.replayer().run(ReplayOptions())
    assert generation_of(docs.store.database, "doc_totals") == 2


def test_cleanup_leaves_a_users_collection_named_like_an_old_generation(docs: Docs) -> None:
    events = deposits(200, 8, seed=51)
    docs.feed(events)
    _two_rebuilds(docs)
    database = docs.store.database
    database["doc_totals__g1"].insert_one({"_id": "mine", "note": "a user's document"})

    replayer = docs.replayer()
    assert replayer.plan(ReplayOptions()).leftovers == []
    assert replayer.cleanup() == []
    assert replayer.left_alone == ["doc_totals__g1"]
    assert list(database["doc_totals__g1"].find()) == [{"_id": "mine", "note": "a user's document"}]

    docs.replayer().run(ReplayOptions())  # a rebuild leaves it too
    assert "doc_totals__g1" in docs.collection_names()
    assert docs.totals() == totals(events)

    with pytest.raises(ReplayRefused, match="--drop-unmarked doc_totals__g7: not a collection"):
        docs.replayer().cleanup(["doc_totals__g7"])
    assert docs.replayer().cleanup(["doc_totals__g1"]) == ["doc_totals__g1"]
    assert "doc_totals__g1" not in docs.collection_names()


def test_a_lookalike_above_the_generation_refuses_the_rebuild_naming_the_way_out(
    docs: Docs,
) -> None:
    docs.feed(deposits(100, 5, seed=52))
    docs.store.database["doc_totals__g1"].insert_one({"_id": "mine"})
    with pytest.raises(StoreError) as refused:
        docs.replayer().run(ReplayOptions())
    assert WAY_OUT in _one_line(str(refused.value))
    assert list(docs.store.database["doc_totals__g1"].find()) == [{"_id": "mine"}]
    assert docs.replayer().cleanup(["doc_totals__g1"]) == ["doc_totals__g1"]
    docs.replayer().run(ReplayOptions())
    assert generation_of(docs.store.database, "doc_totals") == 1


def test_cli_cleanup_names_the_lookalike_it_left_and_drops_it_when_asked(
    docs: Docs, tmp_path: Path
) -> None:
    docs.feed(deposits(100, 5, seed=53))
    _two_rebuilds(docs)
    database = docs.store.database
    database["doc_totals__g1"].insert_one({"_id": "mine"})
    config = str(docs_config(tmp_path, docs.log, docs.url, PROJECTIONS))

    dry = run_cli(["replay", "doc_totals", "--cleanup", "--dry-run", "--config", config])
    assert dry.exit_code == 0 and "nothing to clean up" in dry.stdout, dry.output
    left = run_cli(["replay", "doc_totals", "--cleanup", "--config", config])
    assert left.exit_code == 0, left.output
    assert "nothing to clean up" in left.stdout
    assert "left doc_totals__g1" in left.stdout and WAY_OUT in _one_line(left.stdout)
    assert "doc_totals__g1" in docs.collection_names()

    cleanup = ["replay", "doc_totals", "--cleanup", "--drop-unmarked", "doc_totals__g1"]
    dropped = run_cli([*cleanup, "--config", config])
    assert dropped.exit_code == 0, dropped.output
    assert "dropped doc_totals__g1" in dropped.stdout
    assert "doc_totals__g1" not in docs.collection_names()
