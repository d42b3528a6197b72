"""A bulk retry whose connection to the store is lost at the COMMIT of a hold's retry: the
server may have committed it (on PostgreSQL here it did), so the summary names that hold
as unknown, not as "not done, still parked"; the same command run again goes on with the
rest. So does a purge for the entries of its lost commit."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pymongo.client_session import ClientSession

from config import load_settings
from outbox.db import create_engine
from projections.engine import ProjectionEngine
from projections.mongo_store import MongoStore
from tests.cli_helpers import run_cli, write_config
from tests.cut_store_helpers import doc_totals_behind_a_cut
from tests.outbox_helpers import init_outbox, insert_events
from tests.projection_fixtures import account_totals
from tests.stall_proxy_helpers import CommitCutProxy

RETRIED = b"UPDATE rm_parked_events SET status"  # a hold's retry marks its events retried


@pytest.fixture
def parked(
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    pg_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Path, str, CommitCutProxy]]:
    """``totals`` in PostgreSQL, reached through a :class:`CommitCutProxy`, with accounts a,
    b and c each holding two deposits parked (the first failed, the second held behind)."""
    url = pg_database()
    real = sa.make_url(url)
    proxy = CommitCutProxy((real.host or "127.0.0.1", real.port or 5432), RETRIED)
    data: dict[str, Any] = {
        "projections": ["tests.projection_fixtures:Totals"],
        "store": {"url": proxy.url(url)},
        "engine": {"max_attempts": 1},
        "sources": {"bank": {"url": sqlite_database()}},
    }
    config = write_config(tmp_path / "readmodel.toml", data)
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    source = create_engine(data["sources"]["bank"]["url"])
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
    yield config, url, proxy
    proxy.close()


def _totals(url: str) -> dict[str, int]:
    store = sa.create_engine(url, poolclass=sa.NullPool)
    with store.connect() as conn:
        found = dict(
            conn.execute(sa.select(account_totals.c.account, account_totals.c.total)).all()
        )
    store.dispose()
    return found


def _parked(config: Path) -> list[str]:
    listed = run_cli(["parked", "list", "--json", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    return [e["aggregate_id"] for e in json.loads(listed.stdout)]


def test_a_hold_whose_commit_the_connection_was_lost_at_is_reported_unknown(
    parked: tuple[Path, str, CommitCutProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, url, proxy = parked
    real = ProjectionEngine.retry
    calls = iter(range(1, 100))

    def retry(self: ProjectionEngine, entry: Any) -> int:
        if next(calls) == 2:  # b's retry: its commit is cut
            proxy.armed = True
        return real(self, entry)

    monkeypatch.setattr(ProjectionEngine, "retry", retry)
    args = ["parked", "retry", "--projection", "totals", "--yes", "--config", str(config)]

    cut = run_cli(args)

    assert proxy.cuts == 1
    assert cut.exit_code == 3, cut.output
    assert _unknown_b("totals") in cut.stdout, cut.output
    assert "the connection was lost at the commit" in cut.stderr
    monkeypatch.undo()
    assert _totals(url) == {"a": 20, "b": 20}  # b's retry was committed: the list tells
    assert _parked(config) == ["c", "c"]

    again = run_cli(args)

    assert again.exit_code == 0, again.output
    assert "done: 2 applied, 0 still parked, 0 skipped" in again.stdout
    assert _totals(url) == {"a": 20, "b": 20, "c": 20}


def test_a_purge_whose_commit_the_connection_was_lost_at_says_it_does_not_know(
    parked: tuple[Path, str, CommitCutProxy],
) -> None:
    config, _, proxy = parked
    c = ["--config", str(config)]
    assert "6 skipped" in run_cli(["parked", "skip", "-p", "totals", "-y", *c]).stdout
    proxy.marker, proxy.armed = b"DELETE FROM rm_parked_events", True

    cut = run_cli(["parked", "purge", "-p", "totals", "-y", *c])

    assert proxy.cuts == 1
    assert cut.exit_code == 3, cut.output
    assert (
        "interrupted: 0 skipped entries deleted (projection 'totals'); not done: 0 skipped "
        "entries, kept; unknown: 6 skipped entries whose delete the error cut at its commit, "
        "deleted or kept (`readmodel parked list --all` tells): run the same command again to "
        "go on"
    ) in cut.stdout, cut.output
    listed = run_cli(["parked", "list", "--all", "--json", *c])
    assert json.loads(listed.stdout) == []  # the server had committed the delete


def _unknown_b(projection: str) -> str:
    return (
        f"interrupted: 2 applied, 0 still parked, 0 skipped (projection '{projection}'); not "
        "done: 2 parked event(s) in 1 aggregate(s), still parked; unknown: 2 parked event(s) "
        "in 1 aggregate(s) whose retry the error cut at its commit, applied or still parked "
        "(`readmodel parked list` tells): run the same command again to go on"
    )


def test_a_mongodb_hold_whose_commit_the_store_went_away_at_is_reported_unknown(
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    mongo_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store goes away (:class:`CutProxy`) as b's retry commits: its retries fail (the
    commit never reached the server here, which the client cannot know; one that did:
    tests/test_parked_bulk_commit_cut_mongo.py)."""
    config, proxy, source_url = doc_totals_behind_a_cut(tmp_path, sqlite_database, mongo_database())
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
    real_retry, real_commit = MongoStore.retry_parked, ClientSession.commit_transaction
    holds = iter(range(1, 100))
    cut_at_commit: list[bool] = []

    def retry_parked(self: MongoStore, *args: Any) -> int:
        self.conflict_wait = 1.0  # not 90 s of retries
        if next(holds) == 2:
            cut_at_commit.append(True)
        return real_retry(self, *args)

    def commit(session: ClientSession) -> None:
        if cut_at_commit and cut_at_commit.pop():
            proxy.cut()
        real_commit(session)

    monkeypatch.setattr(MongoStore, "retry_parked", retry_parked)
    monkeypatch.setattr(ClientSession, "commit_transaction", commit)
    args = ["parked", "retry", "--projection", "doc_totals", "--yes", "--config", str(config)]
    try:
        cut = run_cli(args)

        assert cut.exit_code == 3, cut.output
        assert _unknown_b("doc_totals") in cut.stdout, cut.output
        proxy.mend()
        monkeypatch.undo()
        assert _parked(config) == ["b", "b", "c", "c"]  # the list tells: b was not applied
        again = run_cli(args)
        assert again.exit_code == 0, again.output
        assert "done: 4 applied, 0 still parked, 0 skipped" in again.stdout
    finally:
        proxy.close()


def test_a_skip_whose_commit_the_connection_was_lost_at_says_it_does_not_know(
    parked: tuple[Path, str, CommitCutProxy],
) -> None:
    config, _, proxy = parked
    proxy.armed = True  # the skip's own write: one transaction for every chosen event
    args = ["parked", "skip", "-p", "totals", "-y", "--config", str(config)]

    cut = run_cli(args)

    assert proxy.cuts == 1
    assert cut.exit_code == 3, cut.output
    assert (
        "interrupted: 0 applied, 0 still parked, 0 skipped (projection 'totals'); unknown: 6 "
        "parked event(s) in 3 aggregate(s) whose skip the error cut at its commit, done or "
        "still parked (`readmodel parked list` tells): run the same command again to go on"
    ) in cut.stdout, cut.output
    listed = run_cli(["parked", "list", "--all", "--json", "--config", str(config)])
    assert [e["status"] for e in json.loads(listed.stdout)] == ["skipped"] * 6  # committed
    again = run_cli(args)
    assert again.exit_code == 0 and "nothing parked matches" in again.stdout, again.output
