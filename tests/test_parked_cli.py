"""`readmodel parked list|show|retry|skip` on projection events, through the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import load_settings
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox, insert_events
from tests.projection_fixtures import account_totals


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_database: Callable[[], str]
) -> tuple[Path, sa.Engine, Any]:
    """A SQLite source, and the read models in SQLite or in PostgreSQL (whose retries take
    ordered row locks: projections/row_locks.py)."""
    store_url = (
        sqlite_database() if request.param == "sqlite" else request.getfixturevalue("pg_database")()
    )
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store_url},
            "engine": {"max_attempts": 2, "retry_backoff": "1ms"},
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )
    settings = load_settings(config)
    init_outbox(settings.sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    source = sa.create_engine(settings.sources["bank"].url)
    store = sa.create_engine(store_url)
    yield config, source, store
    source.dispose()
    store.dispose()


def _events(accounts: list[str], per_account: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        ("account", account, "Deposited", {"amount": seq * 10, "seq": seq})
        for seq in range(1, per_account + 1)
        for account in accounts
    ]


def _totals(store: sa.Engine) -> dict[str, int]:
    with store.connect() as conn:
        return dict(conn.execute(sa.select(account_totals.c.account, account_totals.c.total)).all())


def test_retry_after_fix_reaches_clean_end_state(
    setup: tuple[Path, sa.Engine, sa.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, source, store = setup
    insert_events(source, _events(["a", "b", "c"], 4))
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "b")

    result = run_cli(["run", "--until-caught-up", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert _totals(store) == {"a": 100, "c": 100}

    listed = run_cli(["parked", "list", "--config", str(config), "--json"])
    entries = json.loads(listed.stdout)
    assert [(e["kind"], e["aggregate_id"]) for e in entries] == [("projection_event", "b")] * 4
    first = entries[0]["ref"]
    assert first.startswith("e") and "refusing b" in entries[0]["reason"]

    shown = json.loads(run_cli(["parked", "show", first, "--config", str(config)]).stdout)
    assert shown["attempts"] == 2 and "RuntimeError: refusing b" in shown["detail"]

    again = run_cli(["parked", "retry", first, "--config", str(config)])
    assert again.exit_code == 1 and "failed again and stays parked" in again.stderr
    assert len(json.loads(run_cli(["parked", "list", "-c", str(config), "--json"]).stdout)) == 4

    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
    fixed = run_cli(["parked", "retry", first, "--config", str(config)])
    assert fixed.exit_code == 0, fixed.output
    assert "applied 4 parked event(s)" in fixed.stdout
    assert _totals(store) == {"a": 100, "b": 100, "c": 100}
    assert json.loads(run_cli(["parked", "list", "-c", str(config), "--json"]).stdout) == []

    insert_events(source, [("account", "b", "Deposited", {"amount": 1, "seq": 5})])
    assert run_cli(["run", "--until-caught-up", "--config", str(config)]).exit_code == 0
    assert _totals(store)["b"] == 101
    with store.connect() as conn:
        violations = conn.execute(sa.select(sa.func.sum(account_totals.c.violations))).scalar()
    assert violations == 0


def test_skip_releases_the_aggregate_once_nothing_of_it_is_parked(
    setup: tuple[Path, sa.Engine, sa.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, source, store = setup
    insert_events(source, _events(["a", "b"], 2))
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "b")
    assert run_cli(["run", "--until-caught-up", "--config", str(config)]).exit_code == 0
    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
    refs = [
        e["ref"]
        for e in json.loads(run_cli(["parked", "list", "-c", str(config), "--json"]).stdout)
    ]
    assert len(refs) == 2

    skipped = run_cli(["parked", "skip", refs[0], "--config", str(config)])
    assert skipped.exit_code == 0, skipped.output
    assert "applied 1 held event(s)" in skipped.stdout
    assert _totals(store)["b"] == 20  # the skipped deposit (10) is not counted

    insert_events(source, [("account", "b", "Deposited", {"amount": 7, "seq": 3})])
    assert run_cli(["run", "--until-caught-up", "--config", str(config)]).exit_code == 0
    assert _totals(store)["b"] == 27
    listed = json.loads(run_cli(["parked", "list", "-c", str(config), "--json", "--all"]).stdout)
    assert sorted(e["status"] for e in listed) == ["retried", "skipped"]
    missing = run_cli(["parked", "skip", "e999", "--config", str(config)])
    assert missing.exit_code == 1 and "no parked projection event e999" in missing.stderr


def test_a_held_event_failing_after_a_skip_says_so_and_a_second_skip_is_refused(
    setup: tuple[Path, sa.Engine, sa.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, source, _ = setup
    insert_events(source, _events(["b"], 3))
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "b")
    assert run_cli(["run", "--until-caught-up", "--config", str(config)]).exit_code == 0
    first, second, third = json.loads(
        run_cli(["parked", "list", "-c", str(config), "--json"]).stdout
    )

    skipped = run_cli(["parked", "skip", first["ref"], "--config", str(config)])

    assert skipped.exit_code == 1 and "failed again and stays parked" in skipped.stderr

    def shown(entry: dict[str, Any]) -> dict[str, Any]:
        result = run_cli(["parked", "show", entry["ref"], "--config", str(config)])
        return json.loads(result.stdout)

    now_first = shown(second)
    assert now_first["reason"] == "handler failed again on retry: RuntimeError('refusing b')"
    assert now_first["attempts"] == 1 and "refusing b" in now_first["detail"]
    assert shown(third)["reason"] == (
        f"held: an earlier event of this aggregate is parked (bank:{second['position']})"
    )
    again = run_cli(["parked", "skip", first["ref"], "--config", str(config)])
    assert again.exit_code == 1, again.output
    assert again.stderr.strip().endswith(
        f"{first['ref']} is no longer parked (it is skipped now); nothing was skipped"
    ), again.stderr


def test_the_parked_table_shows_the_start_of_long_reasons() -> None:
    from workers.cli_parked import _first_line

    pydantic_error = "payload does not match OrderPaid: " + "[{'type': 'missing'}] " * 20
    assert _first_line(pydantic_error, 100) == pydantic_error[:99] + "…"
    assert _first_line("boom\nTraceback (most recent call last): ...", 100) == "boom …"
    assert _first_line("  short reason ", 100) == "short reason"


def test_a_database_error_of_a_retry_is_one_line_and_keeps_the_events_parked(
    setup: tuple[Path, sa.Engine, sa.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry the database fails (not the handler: a column renamed under it) prints one
    line naming the retry (a StoreError, not a traceback), and the parked
    events stay parked, their attempts unchanged."""
    config, source, store = setup
    insert_events(source, _events(["a", "b"], 2))
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "b")
    assert run_cli(["run", "--until-caught-up", "--config", str(config)]).exit_code == 0
    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
    before = json.loads(run_cli(["parked", "list", "-c", str(config), "--json"]).stdout)
    with store.begin() as conn:
        conn.execute(sa.text("ALTER TABLE account_totals RENAME COLUMN total TO renamed"))

    failed = run_cli(["parked", "retry", before[0]["ref"], "--config", str(config)])

    # SQLite reports a missing column as an OperationalError, which the CLI takes for a
    # database it cannot use as it is (exit 3); PostgreSQL's ProgrammingError fails (exit 1).
    assert failed.exit_code == (3 if store.dialect.name == "sqlite" else 1), failed.output
    assert "retry failed" in failed.stderr and "Traceback" not in failed.output
    after = json.loads(run_cli(["parked", "list", "-c", str(config), "--json"]).stdout)
    assert [(e["ref"], e["attempts"]) for e in after] == [(e["ref"], e["attempts"]) for e in before]
