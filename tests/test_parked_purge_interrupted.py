"""A `parked purge` of a MongoDB store deletes chunk by chunk, one transaction each: when the
store becomes unreachable partway, the summary counts the chunks already deleted (it said
0) and the entries kept, and names those whose delete the error cut at its commit as
unknown; the same command run again deletes the rest."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo.client_session import ClientSession

from outbox.db import create_engine
from projections import document_parked_bulk
from projections.document_parked_bulk import DocumentBulkParking
from projections.mongo_store import MongoStore
from tests.cli_helpers import run_cli
from tests.cut_store_helpers import doc_totals_behind_a_cut
from tests.outbox_helpers import insert_events
from tests.stall_proxy_helpers import CutProxy


@dataclass(frozen=True)
class Skipped:
    config: Path
    proxy: CutProxy

    def cut(self, store: Any) -> None:
        store.conflict_wait = 1.0  # not 90 s of retries
        self.proxy.cut()


@pytest.fixture
def skipped(
    tmp_path: Path, sqlite_database: Callable[[], str], mongo_database: Callable[[], str]
) -> Iterator[Skipped]:
    """``doc_totals`` in MongoDB (through a :class:`CutProxy`) with six deposits of account
    a skipped: the first failed, the others were held behind it."""
    config, proxy, source_url = doc_totals_behind_a_cut(tmp_path, sqlite_database, mongo_database())
    source = create_engine(source_url)
    insert_events(
        source, [("account", "a", "Deposited", {"amount": 10, "seq": s}) for s in range(1, 7)]
    )
    source.dispose()
    ran = run_cli(
        ["run", "--until-caught-up", "--config", str(config)], env={"READMODEL_TEST_FAIL_ON": "a"}
    )
    assert ran.exit_code == 0, ran.output
    skip = run_cli(["parked", "skip", "-p", "doc_totals", "-y", "-c", str(config)])
    assert "6 skipped" in skip.stdout, skip.output
    yield Skipped(config, proxy)
    proxy.close()


def _statuses(config: Path) -> list[str]:
    listed = run_cli(["parked", "list", "--all", "--json", "-c", str(config)])
    assert listed.exit_code == 0, listed.output
    return [e["status"] for e in json.loads(listed.stdout)]


def _purge(config: Path) -> Any:
    return run_cli(["parked", "purge", "-p", "doc_totals", "-y", "-c", str(config)])


def test_a_purge_cut_before_its_second_chunk_counts_the_first(
    skipped: Skipped, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(document_parked_bulk, "CHUNK", 4)
    real = MongoStore._retrying
    chunks = iter(range(1, 100))

    def retrying(self: MongoStore, what: str, *args: Any) -> Any:
        if what.startswith("cannot purge") and next(chunks) == 2:
            skipped.cut(self)
        return real(self, what, *args)

    monkeypatch.setattr(MongoStore, "_retrying", retrying)

    cut = _purge(skipped.config)

    assert cut.exit_code == 3, cut.output
    assert (
        "interrupted: 4 skipped entries deleted (projection 'doc_totals'); not done: 2 skipped "
        "entries, kept: run the same command again to go on"
    ) in cut.stdout
    assert "Traceback" not in cut.stderr
    skipped.proxy.mend()
    monkeypatch.undo()
    assert _statuses(skipped.config) == ["skipped"] * 2
    again = _purge(skipped.config)
    assert again.exit_code == 0 and "done: 2 skipped entries deleted" in again.stdout, again.output
    assert _statuses(skipped.config) == []


def test_a_purge_cut_at_the_commit_of_a_chunk_says_it_does_not_know_about_that_chunk(
    skipped: Skipped, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(document_parked_bulk, "CHUNK", 4)
    real = ClientSession.commit_transaction
    calls = iter(range(1, 100))

    def commit(session: ClientSession) -> None:
        if next(calls) == 2:  # the second chunk's: the store goes away as it commits
            skipped.proxy.cut()
        real(session)

    monkeypatch.setattr(ClientSession, "commit_transaction", commit)
    real_chunk = DocumentBulkParking._purge_chunk

    def chunk(self: Any, ids: list[int], progress: Any) -> None:
        self.conflict_wait = 1.0  # not 90 s of retries
        real_chunk(self, ids, progress)

    monkeypatch.setattr(DocumentBulkParking, "_purge_chunk", chunk)

    cut = _purge(skipped.config)

    assert cut.exit_code == 3, cut.output
    assert (
        "interrupted: 4 skipped entries deleted (projection 'doc_totals'); not done: 0 skipped "
        "entries, kept; unknown: 2 skipped entries whose delete the error cut at its commit, "
        "deleted or kept (`readmodel parked list --all` tells): run the same command again to "
        "go on"
    ) in cut.stdout
    skipped.proxy.mend()
    monkeypatch.undo()
    left = _statuses(skipped.config)
    assert left in ([], ["skipped"] * 2)  # whichever it was, the list tells
    again = _purge(skipped.config)
    assert again.exit_code == 0, again.output
    assert _statuses(skipped.config) == []
