"""``readmodel parked retry`` acts on the entry it is given only while that entry is parked:
one skipped, retried or replayed is refused (exit 1, "nothing was retried"; ``parked skip``
says it the same way, "nothing was skipped"), even when other events of its aggregate are
still parked (they are retried by their own ids). A bulk retry (``--projection``) whose
chosen events another operator settled while it asked goes on with the other aggregates, and
retries of a hold only the events it chose that are still parked.
On SQLite, PostgreSQL and MongoDB stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pymongo import MongoClient

import workers.cli_parked_bulk as cli_parked_bulk
from config import load_settings
from outbox.db import create_engine
from outbox.errors import NotParked
from tests.cli_helpers import run_cli, totals_in_store
from tests.outbox_helpers import insert_events
from tests.projection_fixtures import account_totals
from workers.runtime import build_runtime


@dataclass(frozen=True)
class Parked:
    config: Path
    name: str  # the projection
    totals: Callable[[], dict[str, int]]  # account -> total


@pytest.fixture(params=["sqlite", "postgresql", "mongodb"])
def parked(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Parked]:
    """Accounts a and b of ``totals`` (``doc_totals`` in a MongoDB store), each with three
    deposits (10, 20, 30) parked: the first failed, the others are held behind it."""
    config, data, name = totals_in_store(request, tmp_path, sqlite_database)
    settings = load_settings(config)
    source = create_engine(settings.sources["bank"].url)
    for account in ("a", "b"):
        deposits = [
            ("account", account, "Deposited", {"amount": s * 10, "seq": s}) for s in (1, 2, 3)
        ]
        insert_events(source, deposits)
        monkeypatch.setenv("READMODEL_TEST_FAIL_ON", account)
        ran = run_cli(["run", "--until-caught-up", "--config", str(config)])
        assert ran.exit_code == 0, ran.output
    source.dispose()
    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
    if request.param == "mongodb":
        client: MongoClient[Any] = MongoClient(data["stores"]["docs"]["url"])

        def documents() -> dict[str, int]:
            return {d["_id"]: d["total"] for d in client.get_database()["doc_totals"].find()}

        yield Parked(config, name, documents)
        client.close()
    else:
        store = sa.create_engine(data["store"]["url"])

        def rows() -> dict[str, int]:
            query = sa.select(account_totals.c.account, account_totals.c.total)
            with store.connect() as conn:
                return {account: total for account, total in conn.execute(query)}

        yield Parked(config, name, rows)
        store.dispose()


def _entries(parked: Parked) -> dict[tuple[str, int], dict[str, Any]]:
    """Every entry (``--all``) by account and deposit number (1-3)."""
    listed = run_cli(["parked", "list", "--all", "--json", "--config", str(parked.config)])
    assert listed.exit_code == 0, listed.output
    by_account: dict[str, list[dict[str, Any]]] = {}
    for entry in sorted(json.loads(listed.stdout), key=lambda e: e["position"]):
        by_account.setdefault(entry["aggregate_id"], []).append(entry)
    return {(a, n): e for a, events in by_account.items() for n, e in enumerate(events, 1)}


def _statuses(parked: Parked) -> dict[str, str]:
    return {f"{a}{n}": e["status"] for (a, n), e in _entries(parked).items()}


def _skip_with_a_failing_again(parked: Parked, ref: str) -> None:
    """Skip ``ref`` (a's first deposit) while a's handler still fails from its second
    deposit: that one fails again and stays parked, with the third held behind it."""
    env = {"READMODEL_TEST_FAIL_ON": "a", "READMODEL_TEST_FAIL_FROM_SEQ": "2"}
    skipped = run_cli(["parked", "skip", ref, "--config", str(parked.config)], env=env)
    assert skipped.exit_code == 1, skipped.output
    assert "failed again and stays parked" in skipped.stderr


def test_a_retry_of_a_skipped_entry_is_refused_while_its_aggregate_stays_parked(
    parked: Parked,
) -> None:
    first = _entries(parked)[("a", 1)]["ref"]
    _skip_with_a_failing_again(parked, first)
    assert _statuses(parked) == {f"{a}{n}": "parked" for a in "ab" for n in (1, 2, 3)} | {
        "a1": "skipped"
    }

    again = run_cli(["parked", "retry", first, "--config", str(parked.config)])

    assert again.exit_code == 1, again.output
    assert f"{first} is no longer parked (it is skipped now)" in again.stderr
    assert "nothing was retried" in again.stderr
    assert "applied" not in again.stdout
    assert _statuses(parked)["a2"] == "parked" and _statuses(parked)["a3"] == "parked"
    assert parked.totals() == {}

    second = _entries(parked)[("a", 2)]["ref"]  # the aggregate is retried by its own ids
    retried = run_cli(["parked", "retry", second, "--config", str(parked.config)])
    assert retried.exit_code == 0, retried.output
    assert parked.totals() == {"a": 50}


def test_a_retry_of_an_entry_already_retried_is_refused(parked: Parked) -> None:
    first = _entries(parked)[("b", 1)]["ref"]
    done = run_cli(["parked", "retry", first, "--config", str(parked.config)])
    assert done.exit_code == 0, done.output
    assert f"{first}: applied 3 parked event(s)" in done.stdout

    again = run_cli(["parked", "retry", first, "--config", str(parked.config)])

    assert again.exit_code == 1, again.output
    assert again.stderr.strip().endswith(
        f"{first} is no longer parked (it is retried now); nothing was retried"
    ), again.stderr
    assert parked.totals() == {"b": 60}
    assert _statuses(parked) == {"a1": "parked", "a2": "parked", "a3": "parked"} | {
        f"b{n}": "retried" for n in (1, 2, 3)
    }


def test_a_skip_of_an_entry_already_retried_is_refused_as_a_retry_is(parked: Parked) -> None:
    """``parked skip`` of an entry not parked when read says it as ``parked retry`` does."""
    first = _entries(parked)[("b", 1)]["ref"]
    done = run_cli(["parked", "retry", first, "--config", str(parked.config)])
    assert done.exit_code == 0, done.output

    again = run_cli(["parked", "skip", first, "--config", str(parked.config)])

    assert again.exit_code == 1, again.output
    assert again.stderr.strip().endswith(
        f"{first} is no longer parked (it is retried now); nothing was skipped"
    ), again.stderr
    assert "skipped" not in again.stdout
    assert parked.totals() == {"b": 60}
    assert _statuses(parked)["b1"] == "retried"


def test_a_retry_of_an_entry_skipped_after_it_was_read_is_refused(parked: Parked) -> None:
    """The entry read parked (as ``parked retry`` reads it), skipped by another operator
    before the retry holds its lane: the retry finds it skipped under its lock and refuses,
    instead of retrying the events of the aggregate still parked."""
    runtime = build_runtime(load_settings(parked.config), create_tables=False, migrate=False)
    try:
        engine = runtime.engine
        entry = next(e for e in engine.parked(parked.name) if e.aggregate_id == "a")
        _skip_with_a_failing_again(parked, f"e{entry.id}")

        with pytest.raises(NotParked) as refused:
            engine.retry(entry)
    finally:
        runtime.close()

    assert str(refused.value) == (
        f"e{entry.id} is no longer parked (it is skipped now: it changed while being "
        "retried); nothing was retried"
    )
    assert _statuses(parked)["a2"] == "parked" and _statuses(parked)["a3"] == "parked"
    assert parked.totals() == {}


def _other_operator(parked: Parked, *args: str, env: dict[str, str] | None = None) -> None:
    """``readmodel ARGS`` run by another operator, in a process of its own."""
    ran = subprocess.run(
        [sys.executable, "-m", "workers.cli", *args, "--config", str(parked.config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert ran.returncode in (0, 1), ran.stderr


def _while_asked(monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], None]) -> None:
    """Run ``meanwhile`` while the bulk command asks whether to go on (before its work)."""
    asked = cli_parked_bulk.confirm

    def confirm(yes: bool, question: str) -> None:
        meanwhile()
        asked(yes, question)

    monkeypatch.setattr(cli_parked_bulk, "confirm", confirm)


def test_a_bulk_retry_goes_on_past_an_aggregate_settled_while_it_asked(
    parked: Parked, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another operator skips a's first deposit (the others are applied) while the bulk
    retry asks: a's hold is gone; b is still retried, and the run ends done, exit 0."""
    first = _entries(parked)[("a", 1)]["ref"]
    _while_asked(monkeypatch, lambda: _other_operator(parked, "parked", "skip", first))
    args = ["parked", "retry", "--projection", parked.name, "--yes"]

    bulk = run_cli([*args, "--config", str(parked.config)])

    assert bulk.exit_code == 0, bulk.output
    assert f"done: 3 applied, 0 still parked, 0 skipped (projection '{parked.name}')" in (
        bulk.stdout
    )
    assert parked.totals() == {"a": 50, "b": 60}
    assert _statuses(parked) == {"a1": "skipped", "a2": "retried", "a3": "retried"} | {
        f"b{n}": "retried" for n in (1, 2, 3)
    }


def test_a_bulk_retry_retries_the_chosen_events_still_parked_of_a_hold_settled_in_part(
    parked: Parked, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another operator skips a's first deposit while a's handler still fails: a's other
    two stay parked; the bulk retry (the handler fixed) applies them, then b's."""
    first = _entries(parked)[("a", 1)]["ref"]
    env = {"READMODEL_TEST_FAIL_ON": "a", "READMODEL_TEST_FAIL_FROM_SEQ": "2"}
    _while_asked(monkeypatch, lambda: _other_operator(parked, "parked", "skip", first, env=env))
    args = ["parked", "retry", "--projection", parked.name, "--yes"]

    bulk = run_cli([*args, "--config", str(parked.config)])

    assert bulk.exit_code == 0, bulk.output
    assert f"done: 5 applied, 0 still parked, 0 skipped (projection '{parked.name}')" in (
        bulk.stdout
    )
    assert parked.totals() == {"a": 50, "b": 60}
    assert _statuses(parked)["a1"] == "skipped"
