"""The bulk parked commands on a MongoDB store whose connection is lost at a commit the
server did make (:class:`MongoCommitCutProxy` forwards the ``commitTransaction`` and drops
its answer): while the store stays unreachable, the summary names that work as unknown
(exit 3), not as "not done", and the server shows it done; the same command run again goes
on with the rest. When only that connection is lost, pymongo sends the commit again itself,
the server answers that the transaction is committed, and the summary says done. A skip
the store goes away under before its first read says so in one line (exit 3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from outbox.db import create_engine
from projections import document_parked_bulk
from projections.document_parked_bulk import DocumentBulkParking
from projections.mongo_store import MongoStore
from tests.cli_helpers import run_cli
from tests.cut_store_helpers import doc_totals_behind_a_cut
from tests.mongo_commit_cut_helpers import MongoCommitCutProxy
from tests.outbox_helpers import insert_events


@dataclass(frozen=True)
class Deployment:
    config: Path
    proxy: MongoCommitCutProxy
    direct: Database[Any]
    """The store's database reached without the proxy."""

    def run(self, *args: str) -> Any:
        return run_cli([*args, "--config", str(self.config)])

    def statuses(self) -> dict[str, list[str]]:
        """Each account's parked entries' statuses, as the server holds them."""
        found: dict[str, list[str]] = {}
        for entry in self.direct["rm_parked_events"].find().sort("number"):
            found.setdefault(entry["aggregate_id"], []).append(entry["status"])
        return found

    def totals(self) -> dict[str, int]:
        return {d["_id"]: d["total"] for d in self.direct["doc_totals"].find()}


@pytest.fixture
def parked(
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    mongo_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Deployment]:
    """``doc_totals`` in MongoDB through a :class:`MongoCommitCutProxy`, with accounts a, b
    and c each holding two deposits parked (the first failed, the second held behind)."""
    url = mongo_database()
    config, proxy, source_url = doc_totals_behind_a_cut(
        tmp_path, sqlite_database, url, MongoCommitCutProxy
    )
    source = create_engine(source_url)
    for account in "abc":
        insert_events(
            source, [("account", account, "Deposited", {"amount": 10, "seq": s}) for s in (1, 2)]
        )
        ran = run_cli(
            ["run", "--until-caught-up", "--config", str(config)],
            env={"READMODEL_TEST_FAIL_ON": account},
        )
        assert ran.exit_code == 0, ran.output
    source.dispose()
    real = MongoStore._retrying

    def quick(self: MongoStore, *args: Any) -> Any:
        self.conflict_wait = 1.0  # not 90 s of retries while the store is away
        return real(self, *args)

    monkeypatch.setattr(MongoStore, "_retrying", quick)
    client: MongoClient[Any] = MongoClient(url, tz_aware=True)
    try:
        yield Deployment(config, proxy, client.get_database())
    finally:
        client.close()
        proxy.close()


def _arm_at(
    monkeypatch: pytest.MonkeyPatch, proxy: MongoCommitCutProxy, owner: type, name: str, call: int
) -> None:
    """Arm ``proxy`` as the ``call``-th call of ``owner.name`` starts: its transaction's
    commit is the one cut."""
    real = getattr(owner, name)
    calls = iter(range(1, 100))

    def arming(*args: Any) -> Any:
        if next(calls) == call:
            proxy.armed = True
        return real(*args)

    monkeypatch.setattr(owner, name, arming)


def test_a_retry_whose_commit_the_server_made_is_reported_unknown(
    parked: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    _arm_at(monkeypatch, parked.proxy, MongoStore, "retry_parked", 2)  # b's hold
    args = ("parked", "retry", "--projection", "doc_totals", "--yes")

    cut = parked.run(*args)

    assert parked.proxy.cuts == 1
    assert cut.exit_code == 3, cut.output
    assert (
        "interrupted: 2 applied, 0 still parked, 0 skipped (projection 'doc_totals'); not "
        "done: 2 parked event(s) in 1 aggregate(s), still parked; unknown: 2 parked event(s) "
        "in 1 aggregate(s) whose retry the error cut at its commit, applied or still parked "
        "(`readmodel parked list` tells): run the same command again to go on"
    ) in cut.stdout, cut.output
    assert "the connection was lost at the commit" in cut.stderr
    assert parked.totals() == {"a": 20, "b": 20}  # b's retry was committed
    assert parked.statuses() == {
        "a": ["retried"] * 2,
        "b": ["retried"] * 2,
        "c": ["parked"] * 2,
    }
    parked.proxy.mend()
    monkeypatch.undo()

    again = parked.run(*args)

    assert again.exit_code == 0, again.output
    assert "done: 2 applied, 0 still parked, 0 skipped" in again.stdout
    assert parked.totals() == {"a": 20, "b": 20, "c": 20}


def test_a_skip_whose_commit_the_server_made_is_reported_unknown(
    parked: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    _arm_at(monkeypatch, parked.proxy, MongoStore, "skip_parked_many", 1)
    args = ("parked", "skip", "-p", "doc_totals", "-y")

    cut = parked.run(*args)

    assert parked.proxy.cuts == 1
    assert cut.exit_code == 3, cut.output
    assert (
        "interrupted: 0 applied, 0 still parked, 0 skipped (projection 'doc_totals'); "
        "unknown: 6 parked event(s) in 3 aggregate(s) whose skip the error cut at its commit, "
        "done or still parked (`readmodel parked list` tells): run the same command again to "
        "go on"
    ) in cut.stdout, cut.output
    assert "the connection was lost at the commit" in cut.stderr
    assert parked.statuses() == {a: ["skipped"] * 2 for a in "abc"}  # committed
    parked.proxy.mend()
    monkeypatch.undo()

    again = parked.run(*args)

    assert again.exit_code == 0 and "nothing parked matches" in again.stdout, again.output


def test_a_purge_whose_commit_the_server_made_is_reported_unknown(
    parked: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "6 skipped" in parked.run("parked", "skip", "-p", "doc_totals", "-y").stdout
    monkeypatch.setattr(document_parked_bulk, "CHUNK", 4)
    _arm_at(monkeypatch, parked.proxy, DocumentBulkParking, "_purge_chunk", 2)

    cut = parked.run("parked", "purge", "-p", "doc_totals", "-y")

    assert parked.proxy.cuts == 1
    assert cut.exit_code == 3, cut.output
    assert (
        "interrupted: 4 skipped entries deleted (projection 'doc_totals'); not done: 0 skipped "
        "entries, kept; unknown: 2 skipped entries whose delete the error cut at its commit, "
        "deleted or kept (`readmodel parked list --all` tells): run the same command again to "
        "go on"
    ) in cut.stdout, cut.output
    assert "the connection was lost at the commit" in cut.stderr
    assert parked.statuses() == {}  # the second chunk's delete was committed too
    parked.proxy.mend()
    monkeypatch.undo()

    again = parked.run("parked", "purge", "-p", "doc_totals", "-y")

    assert again.exit_code == 0 and "nothing skipped matches" in again.stdout, again.output


@pytest.mark.parametrize(
    ("command", "done"),
    [
        ("retry", "done: 6 applied, 0 still parked, 0 skipped"),
        ("skip", "done: 0 applied, 0 still parked, 6 skipped"),
        ("purge", "done: 6 skipped entries deleted"),
    ],
)
def test_a_commit_whose_answer_alone_was_lost_is_done(
    parked: Deployment, monkeypatch: pytest.MonkeyPatch, command: str, done: str
) -> None:
    """Only the commit's connection goes: pymongo sends ``commitTransaction`` again on a new
    one, the server answers that the transaction is committed: the work is known done."""
    if command == "purge":
        assert "6 skipped" in parked.run("parked", "skip", "-p", "doc_totals", "-y").stdout
        monkeypatch.setattr(document_parked_bulk, "CHUNK", 4)
    parked.proxy.stay_away = False
    owner, name = {
        "retry": (MongoStore, "retry_parked"),
        "skip": (MongoStore, "skip_parked_many"),
        "purge": (DocumentBulkParking, "_purge_chunk"),
    }[command]
    _arm_at(monkeypatch, parked.proxy, owner, name, 2 if command != "skip" else 1)

    cut = parked.run("parked", command, "-p", "doc_totals", "-y")

    assert parked.proxy.cuts == 1
    assert cut.exit_code == 0, cut.output
    assert done in cut.stdout, cut.output
    statuses = {"retry": {a: ["retried"] * 2 for a in "abc"}, "purge": {}}
    assert parked.statuses() == statuses.get(command, {a: ["skipped"] * 2 for a in "abc"})
    if command == "retry":
        assert parked.totals() == {"a": 20, "b": 20, "c": 20}


def test_a_skip_whose_store_went_away_before_it_read_anything_says_so_in_one_line(
    parked: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store goes away as the skip starts, before its first read (of the projection the
    entries are of): a store error naming the store, exit 3, not a driver's traceback."""
    real = MongoStore.skip_parked_many

    def cut_first(self: MongoStore, *args: Any) -> int:
        parked.proxy.cut()
        return real(self, *args)

    monkeypatch.setattr(MongoStore, "skip_parked_many", cut_first)
    args = ("parked", "skip", "-p", "doc_totals", "-y")

    cut = parked.run(*args)

    assert cut.exit_code == 3, cut.output
    assert (
        "interrupted: 0 applied, 0 still parked, 0 skipped (projection 'doc_totals'); not done: "
        "6 parked event(s) in 3 aggregate(s), still parked: run the same command again to go on"
    ) in cut.stdout, cut.output
    errors = [line for line in cut.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: cannot skip parked events: "), (
        cut.stderr
    )
    assert "Traceback" not in cut.stderr, cut.stderr
    assert parked.statuses() == {a: ["parked"] * 2 for a in "abc"}
    parked.proxy.mend()
    monkeypatch.undo()
    again = parked.run(*args)
    assert again.exit_code == 0 and "done: 0 applied, 0 still parked, 6 skipped" in again.stdout
