"""`readmodel parked skip --projection P --type T`: the chosen events are skipped and the
events of their aggregates held behind them applied in order, as a skip by id does; at a
terminal the command asks first, and a "no" changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox, insert_events
from tests.projection_fixtures import read_balances
from tests.terminal_helpers import at_a_terminal


@pytest.fixture(params=["sqlite", "postgresql"])
def held(request: pytest.FixtureRequest, tmp_path: Path, sqlite_database: Callable[[], str]) -> Any:
    """``balances`` with accounts x and y each holding a withdrawal whose payload matches no
    model (parked at once) and a deposit held behind it; z applied."""
    url = (
        sqlite_database() if request.param == "sqlite" else request.getfixturevalue("pg_database")()
    )
    data = {
        "projections": ["tests.projection_fixtures:Balances"],
        "store": {"url": url},
        "engine": {"max_attempts": 1},
        "sources": {"bank": {"url": sqlite_database()}},
    }
    config = write_config(tmp_path / "readmodel.toml", data)
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    source = create_engine(data["sources"]["bank"]["url"])
    insert_events(
        source,
        [
            *[("account", a, "Withdrawn", {"amunt": 1}) for a in "xy"],
            *[("account", a, "Deposited", {"amount": 10, "seq": 1}) for a in "xyz"],
        ],
    )
    source.dispose()
    assert run_cli(["run", "--until-caught-up", "--config", str(config)]).exit_code == 0
    store = sa.create_engine(url)
    yield config, store
    store.dispose()


def _parked(config: Path, *args: str) -> list[tuple[str, str, str]]:
    result = run_cli(["parked", "list", "--json", "-c", str(config), *args])
    return [(e["aggregate_id"], e["event_type"], e["status"]) for e in json.loads(result.stdout)]


def test_skipping_one_type_applies_the_events_held_behind_it(
    held: tuple[Path, sa.Engine],
) -> None:
    config, store = held
    assert _parked(config) == [
        ("x", "Withdrawn", "parked"),
        ("y", "Withdrawn", "parked"),
        ("x", "Deposited", "parked"),
        ("y", "Deposited", "parked"),
    ]
    args = ["parked", "skip", "-p", "balances", "--type", "Withdrawn", "-c", str(config)]
    dry = run_cli([*args, "--dry-run"])
    assert "would skip 2 parked event(s) in 2 aggregate(s)" in dry.stdout, dry.output
    assert "type 'Withdrawn'" in dry.stdout
    assert "bank account:x: skip e1, then apply e3 in order" in dry.stdout

    skipped = run_cli([*args, "--yes"])

    assert skipped.exit_code == 0, skipped.output
    assert "done: 2 applied, 0 still parked, 2 skipped" in skipped.stdout
    assert read_balances(store) == {"x": 10, "y": 10, "z": 10}
    assert _parked(config) == []
    assert sorted(_parked(config, "--all")) == [
        ("x", "Deposited", "retried"),
        ("x", "Withdrawn", "skipped"),
        ("y", "Deposited", "retried"),
        ("y", "Withdrawn", "skipped"),
    ]


def test_at_a_terminal_it_asks_and_a_no_changes_nothing(held: tuple[Path, sa.Engine]) -> None:
    config, store = held
    args = ["parked", "retry", "--projection", "balances", "--config", str(config)]

    declined = at_a_terminal(b"n\n", *args)

    assert declined.returncode == 1, declined
    assert "retry them? [y/N]" in declined.stderr
    assert "aborted: nothing changed" in declined.stderr
    assert len(_parked(config)) == 4
    accepted = at_a_terminal(b"y\n", *args)
    assert accepted.returncode == 1, accepted  # the withdrawals fail again: stay parked
    assert "done: 0 applied, 4 still parked, 0 skipped" in accepted.stdout
    assert "payload does not match" in accepted.stderr
    assert read_balances(store) == {"z": 10}
