"""Ctrl-C while a bulk parked command waits for its COMMIT's answer: the server has committed
(a proxy forwarded the commit and holds the answer back), so the summary names that work as
unknown, not as "not done, still parked"; the command exits 130 and `parked list` shows
what the server did. On PostgreSQL and MongoDB, for `skip`, `retry` and `purge`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from tests.broker_helpers import wait_until
from tests.cli_helpers import run_cli, write_config
from tests.cut_store_helpers import doc_totals_behind_a_cut
from tests.mongo_commit_cut_helpers import MongoCommitCutProxy
from tests.outbox_helpers import init_outbox, insert_events
from tests.stall_proxy_helpers import CommitCutProxy

SQL_MARKERS = {
    "skip": b"UPDATE rm_parked_events SET status",
    "retry": b"UPDATE rm_parked_events SET status",  # the first hold's, a's
    "purge": b"DELETE FROM rm_parked_events",
}
MONGO_MARKERS = {"skip": "update", "retry": "update", "purge": "delete"}


@dataclass
class Deployment:
    config: Path
    projection: str
    arm: Callable[[str], None]  # the commit of the command's own write to be held
    held: Callable[[], int]  # commits whose answer (the server committed) is held so far
    let_go: Callable[[], None]

    def run(self, *args: str) -> Any:
        return run_cli([*args, "--config", str(self.config)])

    def listed(self) -> list[tuple[str, str]]:
        """Each entry's account and status, every status, as the store holds them now."""
        found = self.run("parked", "list", "--all", "--json")
        assert found.exit_code == 0, found.output
        return [(e["aggregate_id"], e["status"]) for e in json.loads(found.stdout)]


def _park_deposits(config: Path, source_url: str) -> None:
    """Accounts a, b and c each holding two deposits parked (the first failed, the second
    held behind it)."""
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


@pytest.fixture(params=["postgresql", "mongodb"])
def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_database: Callable[[], str]
) -> Iterator[Deployment]:
    if request.param == "mongodb":
        url = request.getfixturevalue("mongo_database")()
        config, mongo, source_url = doc_totals_behind_a_cut(
            tmp_path, sqlite_database, url, MongoCommitCutProxy
        )
        _park_deposits(config, source_url)
        mongo.stay_away, mongo.hold = False, True

        def arm_mongo(action: str) -> None:
            command = MONGO_MARKERS[action]
            mongo.marks = lambda body: body.get(command) == "rm_parked_events"
            mongo.armed = True

        yield Deployment(config, "doc_totals", arm_mongo, lambda: mongo.held, mongo.let_go)
        mongo.close()
        return
    url = request.getfixturevalue("pg_database")()
    real = sa.make_url(url)
    proxy = CommitCutProxy((real.host or "127.0.0.1", real.port or 5432), b"", hold=True)
    data: dict[str, Any] = {
        "projections": ["tests.projection_fixtures:Totals"],
        "store": {"url": proxy.url(url)},
        "engine": {"max_attempts": 1},
        "sources": {"bank": {"url": sqlite_database()}},
    }
    config = write_config(tmp_path / "readmodel.toml", data)
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    _park_deposits(config, data["sources"]["bank"]["url"])

    def arm_sql(action: str) -> None:
        proxy.marker, proxy.armed = SQL_MARKERS[action], True

    yield Deployment(config, "totals", arm_sql, lambda: proxy.held, proxy.let_go)
    proxy.close()


def _ctrl_c_at_the_commit(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    """``readmodel ARGS`` in a process of its own, sent SIGINT once the server has answered
    its commit (the answer held back from it)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", *args, "--config", str(deployment.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert wait_until(lambda: deployment.held() == 1, 60), "no commit was held"
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
        deployment.let_go()
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def _interrupted(stopped: subprocess.CompletedProcess[str], summary: str) -> None:
    assert stopped.returncode == 130, (stopped.stdout, stopped.stderr)
    assert summary in stopped.stdout, (stopped.stdout, stopped.stderr)
    assert "error: interrupted (Ctrl-C)" in stopped.stderr
    assert "Traceback" not in stopped.stderr, stopped.stderr


def test_ctrl_c_at_the_commit_of_a_bulk_skip_reports_it_unknown(deployment: Deployment) -> None:
    deployment.arm("skip")
    args = ("parked", "skip", "-p", deployment.projection, "-y")

    stopped = _ctrl_c_at_the_commit(deployment, *args)

    _interrupted(
        stopped,
        f"interrupted: 0 applied, 0 still parked, 0 skipped (projection "
        f"'{deployment.projection}'); unknown: 6 parked event(s) in 3 aggregate(s) whose skip "
        "Ctrl-C cut at its commit, done or still parked (`readmodel parked list` tells): run "
        "the same command again to go on",
    )
    assert deployment.listed() == [(a, "skipped") for a in "abc" for _ in (1, 2)]  # committed
    again = deployment.run(*args)
    assert again.exit_code == 0 and "nothing parked matches" in again.stdout, again.output


def test_ctrl_c_at_the_commit_of_a_hold_s_retry_reports_it_unknown(
    deployment: Deployment,
) -> None:
    deployment.arm("retry")  # a's retry, the first
    args = ("parked", "retry", "-p", deployment.projection, "-y")

    stopped = _ctrl_c_at_the_commit(deployment, *args)

    _interrupted(
        stopped,
        f"interrupted: 0 applied, 0 still parked, 0 skipped (projection "
        f"'{deployment.projection}'); not done: 4 parked event(s) in 2 aggregate(s), still "
        "parked; unknown: 2 parked event(s) in 1 aggregate(s) whose retry Ctrl-C cut at its "
        "commit, applied or still parked (`readmodel parked list` tells): run the same command "
        "again to go on",
    )
    assert deployment.listed() == [
        ("a", "retried"),
        ("a", "retried"),  # committed
        *[(a, "parked") for a in "bc" for _ in (1, 2)],
    ]
    again = deployment.run(*args)
    assert again.exit_code == 0, again.output
    assert "done: 4 applied, 0 still parked, 0 skipped" in again.stdout


def test_ctrl_c_at_the_commit_of_a_purge_reports_it_unknown(deployment: Deployment) -> None:
    skip = deployment.run("parked", "skip", "-p", deployment.projection, "-y")
    assert "6 skipped" in skip.stdout, skip.output
    deployment.arm("purge")

    stopped = _ctrl_c_at_the_commit(
        deployment, "parked", "purge", "-p", deployment.projection, "-y"
    )

    _interrupted(
        stopped,
        f"interrupted: 0 skipped entries deleted (projection '{deployment.projection}'); not "
        "done: 0 skipped entries, kept; unknown: 6 skipped entries whose delete Ctrl-C cut at "
        "its commit, deleted or kept (`readmodel parked list --all` tells): run the same "
        "command again to go on",
    )
    assert deployment.listed() == []  # the server had committed the delete
