"""An operator's skip committed after a document swap's last read of the skipped set, before
it settles (the race tests/test_skip_vs_swap.py orders on PostgreSQL): MongoDB has no row
lock to wait on, but the swap's transaction, settling an entry changed after its snapshot,
fails with a write conflict and is run again; that run reads the skip, and the operator's
skip wins (the event the rebuild skipped is not parked again; those held behind it are
applied). A regression test: this passed before the PostgreSQL fix too.

And a skip reaching an entry the swap has settled (its write conflicts until the swap
commits, then finds the entry ``replayed``): it changes nothing, and now says so (it used
to go on as if it had skipped it)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import projections.document_replay as document_replay
from outbox.errors import ReadmodelError
from projections.document_holds import BLOCKED, PARKED
from projections.document_replay import DocumentReplayer
from projections.engine import ProjectionEngine
from projections.mongo_store import MongoStore
from projections.replay_types import ReplayOptions
from tests.operator_skip_fixtures import OpSkipDocs
from tests.operator_skip_helpers import (
    AMOUNTS,
    WITH_LATE,
    doc_rows,
    park_late_events,
    statuses,
)

WAIT = 30.0


def test_a_skip_committed_after_the_document_swaps_last_read_is_not_parked_again(
    docs_skipped: tuple[ProjectionEngine, MongoStore, OpSkipDocs],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, store, projection = docs_skipped
    name = projection.name
    park_late_events(engine, engine.reader.log, name, monkeypatch, fixed=False)
    (entry,) = [p for p in engine.parked(name) if (p.source, p.position) == ("shop", 6)]
    skips: list[threading.Thread] = []
    reads: list[str] = []

    class SkipAfterTheLastRead(DocumentReplayer):
        def _reread_skips(self, session: Any = None) -> None:
            super()._reread_skips(session)
            if session is None:
                return
            reads.append("swap")
            if skips:
                return
            thread = threading.Thread(target=store.skip_parked, args=(entry.id,), daemon=True)
            skips.append(thread)
            thread.start()
            deadline = time.monotonic() + WAIT  # until the skip is committed: a wait-until
            while store.database[PARKED].find_one({"number": entry.id})["status"] != "skipped":
                assert time.monotonic() < deadline, "the skip did not commit"
                time.sleep(0.02)

    replayer = SkipAfterTheLastRead(engine.reader, projection, store, retire_after=0.0)
    summary = replayer.run(ReplayOptions(skip_errors=True))
    (thread,) = skips
    thread.join(WAIT)

    assert len(reads) >= 2  # the first swap's transaction did not commit
    assert statuses(engine, name) == {
        "shop:2": "skipped",
        "shop:4": "retried",
        "shop:6": "skipped",
        "shop:7": "replayed",
    }
    assert summary.skipped == []
    assert list(store.database[BLOCKED].find({"projection": name})) == []
    assert doc_rows(store, projection) == (WITH_LATE, AMOUNTS)


def test_a_skip_reaching_an_entry_the_document_swap_settled_says_so(
    docs_skipped: tuple[ProjectionEngine, MongoStore, OpSkipDocs],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, store, projection = docs_skipped
    name = projection.name
    park_late_events(engine, engine.reader.log, name, monkeypatch)  # fixed: shop:6 applied
    (entry,) = [p for p in engine.parked(name) if (p.source, p.position) == ("shop", 6)]
    outcome: dict[str, Any] = {}
    skips: list[threading.Thread] = []
    settle = document_replay.settle_parked

    def skip() -> None:
        try:
            outcome["applied"] = engine.skip(entry)
        except ReadmodelError as exc:
            outcome["error"] = str(exc)

    def settle_then_skip(*args: Any, **kw: Any) -> int:
        released = settle(*args, **kw)  # shop:6 and shop:7 replayed, not committed yet
        if not skips:
            skips.append(threading.Thread(target=skip, daemon=True))
            skips[0].start()
        return released

    monkeypatch.setattr(document_replay, "settle_parked", settle_then_skip)
    DocumentReplayer(engine.reader, projection, store, retire_after=0.0).run(ReplayOptions())
    (thread,) = skips
    thread.join(WAIT)
    assert not thread.is_alive()

    assert statuses(engine, name) == {
        "shop:2": "skipped",
        "shop:4": "retried",
        "shop:6": "replayed",
        "shop:7": "replayed",
    }
    assert outcome == {
        "error": f"e{entry.id} is no longer parked (it is replayed now: it changed while "
        "being skipped); nothing was skipped"
    }
    assert doc_rows(store, projection) == (sorted([*WITH_LATE, "shop:6"]), AMOUNTS)
