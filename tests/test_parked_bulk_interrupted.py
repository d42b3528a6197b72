"""A bulk parked command the store fails under partway (its connections ended, the database
then unreachable), or that Ctrl-C stops, prints what it did so far and what it did not,
then the error, and exits 3 (130 for Ctrl-C): nothing is lost, the aggregates not done stay
parked, and the same command run again goes on with them."""

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
from pymongo import MongoClient

from config import load_settings
from outbox.db import create_engine
from outbox.parking import ParkedEvents
from projections.engine import ProjectionEngine
from projections.sql_store import SqlStore
from projections.store import AggregateKey
from tests.broker_helpers import wait_until
from tests.cli_helpers import DOC_TOTALS, run_cli, write_config
from tests.conftest import allow_connections
from tests.outbox_helpers import init_outbox, insert_events
from tests.projection_fixtures import HANG_ON, account_totals, balances
from tests.stall_proxy_helpers import CutProxy


@dataclass(frozen=True)
class Bank:
    config: Path
    name: str  # the projection
    totals: Callable[[], dict[str, int]]  # account -> total
    cut: Callable[[ProjectionEngine], None]  # the store unreachable from now on
    mend: Callable[[], None]


def _setup(tmp_path: Path, data: dict[str, Any], events: list[Any]) -> Path:
    config = write_config(tmp_path / "readmodel.toml", data)
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    source = create_engine(data["sources"]["bank"]["url"])
    insert_events(source, events)
    source.dispose()
    return config


@pytest.fixture(params=["postgresql", "mongodb", "sqlite"])
def bank(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Bank]:
    """``totals`` with accounts a, b and c each holding two deposits parked (the first
    failed, the second held behind it); d applied."""
    data: dict[str, Any] = {
        "projections": ["tests.projection_fixtures:Totals"],
        "store": {"url": sqlite_database()},
        "engine": {"max_attempts": 1},
        "sources": {"bank": {"url": sqlite_database()}},
    }
    name, proxy = "totals", None
    if request.param == "postgresql":
        data["store"] = {"url": request.getfixturevalue("pg_database")()}
    elif request.param == "mongodb":
        mongo = request.getfixturevalue("mongo_database")()
        host, port = mongo.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        proxy = CutProxy((host, int(port)))
        data["projections"] = [DOC_TOTALS]
        data["stores"] = {
            "docs": {
                "url": mongo.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
                + "&serverSelectionTimeoutMS=1000&connectTimeoutMS=1000"
            }
        }
        name = "doc_totals"
    deposits = [
        ("account", a, "Deposited", {"amount": 10, "seq": s}) for a in "abcd" for s in (1, 2)
    ]
    config = _setup(tmp_path, data, [])
    source = create_engine(data["sources"]["bank"]["url"])
    for account in "abcd":
        insert_events(source, [d for d in deposits if d[1] == account])
        if account != "d":
            monkeypatch.setenv("READMODEL_TEST_FAIL_ON", account)
        ran = run_cli(["run", "--until-caught-up", "--config", str(config)])
        assert ran.exit_code == 0, ran.output
    source.dispose()
    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")

    if proxy is not None:
        client: MongoClient[Any] = MongoClient(mongo)

        def cut(engine: ProjectionEngine) -> None:
            for store in engine.parking_stores():
                store.conflict_wait = 1.0  # type: ignore[attr-defined]  # not 90 s of retries
            proxy.cut()

        def totals() -> dict[str, int]:
            return {d["_id"]: d["total"] for d in client.get_database()["doc_totals"].find()}

        yield Bank(config, name, totals, cut, proxy.mend)
        client.close()
        proxy.close()
        return
    url = data["store"]["url"]
    store = sa.create_engine(url, poolclass=sa.NullPool)

    def totals_sql() -> dict[str, int]:
        with store.connect() as conn:
            query = sa.select(account_totals.c.account, account_totals.c.total)
            return dict(conn.execute(query).all())

    if request.param == "postgresql":
        yield Bank(
            config,
            name,
            totals_sql,
            lambda _: allow_connections(url, False),
            lambda: allow_connections(url, True),
        )
        allow_connections(url, True)
    else:
        yield Bank(config, name, totals_sql, lambda _: None, lambda: None)
    store.dispose()


def _before_retry(
    monkeypatch: pytest.MonkeyPatch, call: int, fault: Callable[[ProjectionEngine], None]
) -> None:
    """Run ``fault`` just before the ``call``-th hold is retried (counting from 1)."""
    real = ProjectionEngine.retry
    calls = iter(range(1, 1_000_000))

    def retry(self: ProjectionEngine, entry: Any) -> int:
        if next(calls) == call:
            fault(self)
        return real(self, entry)

    monkeypatch.setattr(ProjectionEngine, "retry", retry)


def _cut_before(monkeypatch: pytest.MonkeyPatch, owner: type, method: str, url: str) -> None:
    """The PostgreSQL database ``url`` unreachable just before ``owner.method`` runs."""
    real = getattr(owner, method)

    def cut_first(self: Any, *args: Any) -> Any:
        allow_connections(url, False)
        return real(self, *args)

    monkeypatch.setattr(owner, method, cut_first)


def _parked(config: Path, *args: str) -> list[dict[str, Any]]:
    listed = run_cli(["parked", "list", "--json", "--config", str(config), *args])
    assert listed.exit_code == 0, listed.output
    return json.loads(listed.stdout)


@pytest.mark.parametrize("bank", ["postgresql", "mongodb"], indirect=True)
def test_a_bulk_retry_the_store_fails_under_says_what_it_did_and_goes_on_when_run_again(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["parked", "retry", "--projection", bank.name, "--yes", "--config", str(bank.config)]
    _before_retry(monkeypatch, 2, bank.cut)  # a is retried, then the store goes away

    cut = run_cli(args)

    assert cut.exit_code == 3, cut.output
    assert (
        f"interrupted: 2 applied, 0 still parked, 0 skipped (projection '{bank.name}'); "
        "not done: 4 parked event(s) in 2 aggregate(s), still parked: run the same command "
        "again to go on"
    ) in cut.stdout
    errors = [line for line in cut.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, cut.stderr
    assert "Traceback" not in cut.stderr
    bank.mend()
    monkeypatch.undo()
    _goes_on(bank, args)


def _goes_on(bank: Bank, args: list[str]) -> None:
    """a was retried, b and c stay parked whole; ``args`` run again retries them."""
    assert [e["aggregate_id"] for e in _parked(bank.config)] == ["b", "b", "c", "c"]
    assert bank.totals() == {"a": 20, "d": 20}

    again = run_cli(args)

    assert again.exit_code == 0, again.output
    assert "done: 4 applied, 0 still parked, 0 skipped" in again.stdout
    assert bank.totals() == {a: 20 for a in "abcd"}
    assert [e["status"] for e in _parked(bank.config, "--all")] == ["retried"] * 6


@pytest.mark.parametrize("bank", ["sqlite", "postgresql"], indirect=True)
def test_ctrl_c_in_a_bulk_retry_says_what_it_did_and_exits_130(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a process of its own, as an operator runs it (a SIGINT in this one would go to the
    signal handling an in-process `run` of an earlier test left behind)."""
    args = ["parked", "retry", "--projection", bank.name, "--yes", "--config", str(bank.config)]
    monkeypatch.setenv(HANG_ON, "b")  # b's handler never returns (in Python): Ctrl-C stops it
    child = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert wait_until(lambda: "a" in bank.totals(), 60), "a was not retried"
        child.send_signal(signal.SIGINT)  # while b's handler hangs, or just before
        stdout, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()

    assert child.returncode == 130, (stdout, stderr)
    assert (
        "interrupted: 2 applied, 0 still parked, 0 skipped "
        f"(projection '{bank.name}'); not done: 4 parked event(s) in 2 aggregate(s)"
    ) in stdout
    assert "error: interrupted (Ctrl-C)" in stderr and "Traceback" not in stderr
    monkeypatch.undo()
    _goes_on(bank, args)


@pytest.fixture
def withdrawals(
    tmp_path: Path, sqlite_database: Callable[[], str], pg_database: Callable[[], str]
) -> Iterator[tuple[Path, str]]:
    """``balances`` in PostgreSQL with accounts x, y and w each holding a withdrawal whose
    payload matches no model (parked at once) and a deposit held behind it."""
    url = pg_database()
    data = {
        "projections": ["tests.projection_fixtures:Balances"],
        "store": {"url": url},
        "engine": {"max_attempts": 1},
        "sources": {"bank": {"url": sqlite_database()}},
    }
    config = _setup(
        tmp_path,
        data,
        [
            *[("account", a, "Withdrawn", {"amunt": 1}) for a in "xyw"],
            *[("account", a, "Deposited", {"amount": 10, "seq": 1}) for a in "xyw"],
        ],
    )
    assert run_cli(["run", "--until-caught-up", "--config", str(config)]).exit_code == 0
    yield config, url
    allow_connections(url, True)


def _balances(url: str) -> dict[str, int]:
    store = sa.create_engine(url, poolclass=sa.NullPool)
    with store.connect() as conn:
        found = dict(conn.execute(sa.select(balances.c.account, balances.c.balance)).all())
    store.dispose()
    return found


def test_a_bulk_skip_the_store_fails_under_before_the_events_held_behind_are_applied_goes_on(
    withdrawals: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The withdrawals are skipped (one write), one aggregate's deposit applied, then the
    store goes away: the others' deposits, held behind skipped withdrawals, stay parked; the
    same command run again applies them (no withdrawal is parked now, and still the command
    knows them)."""
    config, url = withdrawals
    args = ["parked", "skip", "-p", "balances", "--type", "Withdrawn", "-y", "-c", str(config)]
    _before_retry(monkeypatch, 2, lambda _: allow_connections(url, False))

    cut = run_cli(args)

    assert cut.exit_code == 3, cut.output
    assert (
        "interrupted: 1 applied, 0 still parked, 3 skipped (projection 'balances', type "
        "'Withdrawn'); not applied yet: 2 event(s) held behind the skipped ones in 2 "
        "aggregate(s), still parked: run the same command again to go on"
    ) in cut.stdout
    assert len([line for line in cut.stderr.splitlines() if line.startswith("error: ")]) == 1
    allow_connections(url, True)
    monkeypatch.undo()
    left = _parked(config)
    assert [e["event_type"] for e in left] == ["Deposited"] * 2
    (applied,) = set("xyw") - {e["aggregate_id"] for e in left}  # the first aggregate retried
    assert _balances(url) == {applied: 10}
    dry = run_cli([*args[:-3], "--dry-run", "-c", str(config)])
    assert "would apply 2 event(s) held behind skipped ones in 2 aggregate(s)" in dry.stdout

    again = run_cli(args)

    assert again.exit_code == 0, again.output
    assert "done: 2 applied, 0 still parked, 0 skipped" in again.stdout
    assert _balances(url) == {"x": 10, "y": 10, "w": 10}
    assert _parked(config) == []
    assert sorted((e["aggregate_id"], e["status"]) for e in _parked(config, "--all")) == sorted(
        [(a, "skipped") for a in "xyw"] + [(a, "retried") for a in "xyw"]
    )
    nothing = run_cli(args)
    assert nothing.exit_code == 0 and "nothing parked matches" in nothing.stdout, nothing.output


def test_a_bulk_skip_whose_skip_the_store_fails_under_changes_nothing_and_goes_on_when_run_again(
    withdrawals: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, url = withdrawals
    args = ["parked", "skip", "-p", "balances", "--type", "Withdrawn", "-y", "-c", str(config)]
    _cut_before(monkeypatch, SqlStore, "skip_parked_many", url)

    cut = run_cli(args)

    assert cut.exit_code == 3, cut.output
    assert (
        "interrupted: 0 applied, 0 still parked, 0 skipped (projection 'balances', type "
        "'Withdrawn'); not done: 3 parked event(s) in 3 aggregate(s), still parked: run the "
        "same command again to go on"
    ) in cut.stdout
    allow_connections(url, True)
    monkeypatch.undo()
    assert len(_parked(config)) == 6
    again = run_cli(args)
    assert again.exit_code == 0, again.output
    assert "done: 3 applied, 0 still parked, 3 skipped" in again.stdout
    assert _balances(url) == {"x": 10, "y": 10, "w": 10}


@pytest.mark.parametrize("bank", ["sqlite", "postgresql", "mongodb"], indirect=True)
def test_each_store_tells_the_position_each_hold_is_blocked_from(bank: Bank) -> None:
    from workers.runtime import build_runtime

    runtime = build_runtime(load_settings(bank.config), create_tables=False, migrate=False)
    try:
        (store,) = runtime.engine.parking_stores()[-1:]
        found = store.blocked_since(bank.name)
    finally:
        runtime.close()
    first = {}
    for entry in _parked(bank.config):
        first.setdefault(entry["aggregate_id"], entry["position"])
    assert found == {
        ("bank", AggregateKey("", "account", account)): position
        for account, position in first.items()
    }


def test_a_purge_and_a_malformed_skip_the_store_fails_under_change_nothing_and_go_on(
    withdrawals: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, url = withdrawals
    c = ["-c", str(config)]
    assert (
        run_cli(["parked", "skip", "-p", "balances", "--type", "Withdrawn", "-y", *c]).exit_code
        == 0
    )
    _cut_before(monkeypatch, SqlStore, "purge_skipped", url)
    purge = ["parked", "purge", "-p", "balances", "-y", *c]

    cut = run_cli(purge)

    assert cut.exit_code == 3, cut.output
    assert (
        "interrupted: 0 skipped entries deleted (projection 'balances'); not done: 3 skipped "
        "entries, kept: run the same command again to go on"
    ) in cut.stdout
    allow_connections(url, True)
    monkeypatch.undo()
    assert len(_parked(config, "--all")) == 6
    again = run_cli(purge)
    assert again.exit_code == 0 and "done: 3 skipped entries deleted" in again.stdout, again.output

    source = create_engine(load_settings(config).sources["bank"].url)
    with source.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                "VALUES ('account', 'v', 'Deposited', 'not json')"
            )
        )
    source.dispose()
    assert run_cli(["run", "--until-caught-up", *c]).exit_code == 0
    _cut_before(monkeypatch, ParkedEvents, "skip_many", url)
    malformed = ["parked", "skip", "--malformed", "-s", "bank", "-y", *c]

    cut = run_cli(malformed)

    assert cut.exit_code == 3, cut.output
    assert (
        "interrupted: 0 skipped (malformed rows of source 'bank'); not done: 1 malformed "
        "outbox row(s), still parked: run the same command again to go on"
    ) in cut.stdout
    allow_connections(url, True)
    monkeypatch.undo()
    again = run_cli(malformed)
    assert again.exit_code == 0 and "1 skipped (malformed rows" in again.stdout, again.output
