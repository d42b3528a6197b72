"""A bulk retry whose connection to the store is lost at the COMMIT of a hold's retry: the
server may have committed it (here it did), so the summary names that hold as unknown, not
as "not done, still parked"; the same command run again goes on with the rest."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from projections.engine import ProjectionEngine
from tests.cli_helpers import run_cli, write_config
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
    assert (
        "interrupted: 2 applied, 0 still parked, 0 skipped (projection 'totals'); not done: 2 "
        "parked event(s) in 1 aggregate(s), still parked; unknown: 2 parked event(s) in 1 "
        "aggregate(s) whose retry the error cut at its commit, applied or still parked "
        "(`readmodel parked list` tells): run the same command again to go on"
    ) in cut.stdout, cut.output
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
