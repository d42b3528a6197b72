"""`readmodel parked retry|skip --projection P` (and `skip --malformed --source S`): many
parked entries at once, aggregate by aggregate, in order; an aggregate failing again stays
parked while the others go on; skipped entries stay listed; nothing runs unconfirmed."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pymongo import MongoClient

from config import load_settings
from outbox.db import create_engine
from tests.cli_helpers import DOC_TOTALS, run_cli, totals_in_store, write_config
from tests.outbox_helpers import init_outbox, insert_events
from tests.projection_fixtures import account_totals


@dataclass(frozen=True)
class Parked:
    config: Path
    name: str  # the projection
    source: sa.Engine
    totals: Callable[[], dict[str, tuple[int, int]]]  # account -> (total, violations)


@pytest.fixture(params=["sqlite", "postgresql", "mongodb"])
def parked(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """Accounts a, b and c of ``totals`` (``doc_totals`` in a MongoDB store), each with its
    two deposits parked (the first failed, the second is held behind it); d applied."""
    config, data, name = totals_in_store(request, tmp_path, sqlite_database)
    settings = load_settings(config)
    source = create_engine(settings.sources["bank"].url)
    for account in ("a", "b", "c", "d"):
        deposits = [("account", account, "Deposited", {"amount": 10, "seq": s}) for s in (1, 2)]
        insert_events(source, deposits)
        if account != "d":
            monkeypatch.setenv("READMODEL_TEST_FAIL_ON", account)
        ran = run_cli(["run", "--until-caught-up", "--config", str(config)])
        assert ran.exit_code == 0, ran.output
    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
    if request.param == "mongodb":
        client: MongoClient[Any] = MongoClient(data["stores"]["docs"]["url"])

        def totals() -> dict[str, tuple[int, int]]:
            docs = client.get_database()["doc_totals"].find()
            return {d["_id"]: (d["total"], d["violations"]) for d in docs}

        yield Parked(config, name, source, totals)
        client.close()
    else:
        store = sa.create_engine(data["store"]["url"])

        def totals() -> dict[str, tuple[int, int]]:
            columns = account_totals.c
            query = sa.select(columns.account, columns.total, columns.violations)
            with store.connect() as conn:
                return {a: (t, v) for a, t, v in conn.execute(query)}

        yield Parked(config, name, source, totals)
        store.dispose()
    source.dispose()


def _listed(config: Path, *args: str) -> list[dict[str, Any]]:
    result = run_cli(["parked", "list", "--json", "--config", str(config), *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _parked_accounts(config: Path) -> list[str]:
    return [e["aggregate_id"] for e in _listed(config)]


def test_bulk_retry_goes_on_past_an_aggregate_failing_again_and_keeps_it_parked(
    parked: Parked, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, name = str(parked.config), parked.name
    assert _parked_accounts(parked.config) == ["a", "a", "b", "b", "c", "c"]

    refused = run_cli(["parked", "retry", "--projection", name, "--config", config])
    assert refused.exit_code == 2, refused.output
    assert "not an interactive terminal" in refused.stderr and "--yes" in refused.stderr
    dry = run_cli(["parked", "retry", "--projection", name, "--dry-run", "-c", config])
    assert dry.exit_code == 0, dry.output
    assert f"would retry 6 parked event(s) in 3 aggregate(s) (projection '{name}')" in dry.stdout
    assert "bank account:b: apply e3 e4 in order" in dry.stdout
    assert "dry run: nothing changed" in dry.stdout
    assert _parked_accounts(parked.config) == ["a", "a", "b", "b", "c", "c"]
    assert parked.totals() == {"d": (20, 0)}

    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "b")
    monkeypatch.setenv("READMODEL_TEST_FAIL_FROM_SEQ", "2")  # b's first deposit applies
    partly = run_cli(["parked", "retry", "--projection", name, "--yes", "--config", config])

    assert partly.exit_code == 1, partly.output
    assert f"done: 4 applied, 2 still parked, 0 skipped (projection '{name}')" in partly.stdout
    assert "e4 (bank account:b) failed again and stays parked" in partly.stderr
    assert "refusing b" in partly.stderr
    assert _parked_accounts(parked.config) == ["b", "b"]  # rolled back whole, as by its id
    assert parked.totals() == {"a": (20, 0), "c": (20, 0), "d": (20, 0)}
    again = _listed(parked.config)
    assert again[1]["reason"] == "handler failed again on retry: RuntimeError('refusing b')"

    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
    fixed = run_cli(
        ["parked", "retry", "-p", name, "-s", "bank", "--type", "Deposited", "-y"] + ["-c", config]
    )
    assert fixed.exit_code == 0, fixed.output
    assert "done: 2 applied, 0 still parked, 0 skipped" in fixed.stdout
    assert parked.totals() == {a: (20, 0) for a in "abcd"}
    assert [e["status"] for e in _listed(parked.config, "--all")] == ["retried"] * 6

    insert_events(parked.source, [("account", "b", "Deposited", {"amount": 5, "seq": 3})])
    assert run_cli(["run", "--until-caught-up", "--config", config]).exit_code == 0
    assert parked.totals()["b"] == (25, 0)  # the aggregate flows again, in order


def test_bulk_skip_keeps_the_entries_listed_and_releases_their_aggregates(
    parked: Parked,
) -> None:
    config, name = str(parked.config), parked.name
    nothing = run_cli(["parked", "skip", "-p", name, "--type", "Withdrawn", "-y", "-c", config])
    assert nothing.exit_code == 0, nothing.output
    assert "nothing parked matches" in nothing.stdout
    other = run_cli(["parked", "skip", "-p", name, "--source", "shop", "--dry-run", "-c", config])
    assert other.exit_code == 0 and "nothing parked matches" in other.stdout, other.output
    dry = run_cli(["parked", "skip", "-p", name, "--dry-run", "-c", config])
    assert "would skip 6 parked event(s) in 3 aggregate(s)" in dry.stdout, dry.output
    assert "bank account:c: skip e5 e6" in dry.stdout

    skipped = run_cli(["parked", "skip", "--projection", name, "--yes", "--config", config])

    assert skipped.exit_code == 0, skipped.output
    assert f"done: 0 applied, 0 still parked, 6 skipped (projection '{name}')" in skipped.stdout
    assert _listed(parked.config) == []
    every = _listed(parked.config, "--all")
    assert [(e["aggregate_id"], e["status"]) for e in every] == [
        (a, "skipped") for a in ("a", "a", "b", "b", "c", "c")
    ]
    insert_events(
        parked.source, [("account", a, "Deposited", {"amount": 1, "seq": 3}) for a in "abc"]
    )
    assert run_cli(["run", "--until-caught-up", "--config", config]).exit_code == 0
    assert _listed(parked.config) == []
    assert {a: total for a, (total, _) in parked.totals().items()} == {
        "a": 1,
        "b": 1,
        "c": 1,
        "d": 20,
    }


def test_purge_deletes_skipped_entries_only(parked: Parked) -> None:
    config, name = str(parked.config), parked.name
    first = _listed(parked.config)[0]["ref"]
    assert run_cli(["parked", "skip", first, "--config", config]).exit_code == 0  # a: 1 retried
    refused = run_cli(["parked", "purge", "--projection", name, "--config", config])
    assert refused.exit_code == 2 and "not an interactive terminal" in refused.stderr
    dry = run_cli(["parked", "purge", "-p", name, "--dry-run", "-c", config])
    assert f"would delete 1 skipped entry (projection '{name}')" in dry.stdout, dry.output

    purged = run_cli(["parked", "purge", "-p", name, "--yes", "-c", config])

    assert purged.exit_code == 0, purged.output
    assert f"done: 1 skipped entry deleted (projection '{name}')" in purged.stdout
    every = _listed(parked.config, "--all")
    assert [(e["aggregate_id"], e["status"]) for e in every] == [
        ("a", "retried"),
        *[(a, "parked") for a in ("b", "b", "c", "c")],
    ]
    again = run_cli(
        ["parked", "purge", "-p", name, "-s", "bank", "--type", "Deposited", "-y", "-c", config]
    )
    assert again.exit_code == 0 and "nothing skipped matches" in again.stdout, again.output
    assert len(_listed(parked.config, "--all")) == 5


def test_a_removed_projections_events_are_skipped_in_bulk_not_retried(parked: Parked) -> None:
    text = parked.config.read_text()
    for path in ("tests.projection_fixtures:Totals", DOC_TOTALS):
        text = text.replace(path, "tests.projection_fixtures:Balances")
    removed = parked.config.with_name("removed.toml")
    removed.write_text(text)
    config = str(removed)
    name = parked.name

    retried = run_cli(["parked", "retry", "-p", name, "--yes", "-c", config])
    assert retried.exit_code == 2 and "(no handler)" in retried.stderr, retried.output
    skipped = run_cli(["parked", "skip", "-p", name, "--yes", "-c", config])

    assert skipped.exit_code == 0, skipped.output
    assert f"projection '{name}' is no longer configured" in skipped.stderr
    assert "done: 0 applied, 0 still parked, 6 skipped" in skipped.stdout
    every = _listed(removed, "--all", "--projection", name)
    assert [e["status"] for e in every] == ["skipped"] * 6


def test_bulk_forms_refuse_a_mix_with_an_entry_id_or_no_choice(parked: Parked) -> None:
    config, name = str(parked.config), parked.name
    cases = [
        (["retry", "--config", config], "give an entry id, or --projection P to retry many"),
        (["skip", "-s", "bank", "-c", config], "or --malformed --source S"),
        (["retry", "e1", "-p", name, "-c", config], "--projection: only without an entry id"),
        (["skip", "e1", "--dry-run", "-c", config], "--dry-run: only without an entry id"),
        (["skip", "--malformed", "-c", config], "--malformed takes --source"),
        (["retry", "-p", "nosuch", "-y", "-c", config], "unknown projection 'nosuch'"),
        (["purge", "-c", config], "give --projection P, or --malformed --source S"),
        (["purge", "--malformed", "-c", config], "--malformed takes --source"),
        (["purge", "-p", "nosuch", "-y", "-c", config], "unknown projection 'nosuch'"),
    ]
    for args, message in cases:
        result = run_cli(["parked", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
    assert len(_listed(parked.config)) == 6


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_malformed_rows_are_skipped_by_source_and_stay_listed(
    store: str, request: pytest.FixtureRequest, tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    url = sqlite_database() if store == "sqlite" else request.getfixturevalue("pg_database")()
    data = {
        "projections": ["tests.projection_fixtures:Totals"],
        "store": {"url": url},
        "sources": {"bank": {"url": sqlite_database()}},
    }
    config = write_config(tmp_path / "readmodel.toml", data)
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    source = create_engine(data["sources"]["bank"]["url"])
    with source.begin() as conn:
        for payload in ("not json", "[1, 2]", '{"amount": 3, "seq": 1}'):
            conn.execute(
                sa.text(
                    "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                    "VALUES ('account', 'a', 'Deposited', :p)"
                ),
                {"p": payload},
            )
    source.dispose()
    assert run_cli(["run", "--until-caught-up", "--config", str(config)]).exit_code == 0
    rows = [e for e in _listed(config) if e["kind"] == "outbox_row"]
    assert len(rows) == 2

    refused = run_cli(["parked", "skip", "--malformed", "--source", "bank", "-c", str(config)])
    assert refused.exit_code == 2 and "not an interactive terminal" in refused.stderr
    none = run_cli(["parked", "skip", "--malformed", "-s", "shop", "-y", "-c", str(config)])
    assert none.exit_code == 0 and "nothing parked matches" in none.stdout, none.output
    skipped = run_cli(["parked", "skip", "--malformed", "-s", "bank", "-y", "-c", str(config)])

    assert skipped.exit_code == 0, skipped.output
    assert "2 skipped (malformed rows of source 'bank'" in skipped.stdout
    assert _listed(config) == []
    every = _listed(config, "--all")
    assert sorted((e["ref"], e["status"]) for e in every) == sorted(
        (e["ref"], "skipped") for e in rows
    )
    purged = run_cli(["parked", "purge", "--malformed", "-s", "bank", "-y", "-c", str(config)])
    assert purged.exit_code == 0, purged.output
    assert "done: 2 skipped entries deleted (malformed rows of source 'bank')" in purged.stdout
    assert _listed(config, "--all") == []
