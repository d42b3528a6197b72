"""The parked events of a projection removed from the configuration can still be listed,
shown and skipped by its name (with a note that it is no longer configured); retrying one
is refused, as no handler can apply it; a name neither configured nor in the store is
still refused as a typo, naming the known ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from config import load_settings
from outbox.db import create_engine
from tests.cli_helpers import run_cli, totals_in_store, write_config
from tests.outbox_helpers import insert_events

BALANCES = "tests.projection_fixtures:Balances"


@dataclass(frozen=True)
class Removed:
    config: Path
    name: str  # the removed projection

    @property
    def note(self) -> str:
        return f"projection {self.name!r} is no longer configured"


@pytest.fixture(params=["sqlite", "postgresql", "mongodb"])
def removed(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Removed:
    """A config without ``totals`` (``doc_totals`` in a MongoDB store), whose store keeps 2
    parked events of it (account b's: the first failed, the second is held behind it) and
    ``balances`` applied everything."""
    config, data, name = totals_in_store(request, tmp_path, sqlite_database, also=[BALANCES])
    source = create_engine(load_settings(config).sources["bank"].url)
    try:
        insert_events(
            source,
            [
                ("account", account, "Deposited", {"amount": 10, "seq": seq})
                for seq in (1, 2)
                for account in ("a", "b")
            ],
        )
    finally:
        source.dispose()
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "b")
    ran = run_cli(["run", "--until-caught-up", "--config", str(config)])
    assert ran.exit_code == 0, ran.output
    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
    data["projections"] = [BALANCES]
    return Removed(write_config(config, data), name)


def _list(config: Path, *args: str) -> Any:
    result = run_cli(["parked", "list", "--json", "--config", str(config), *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_a_removed_projections_parked_events_are_listed_by_its_name(removed: Removed) -> None:
    config, name = removed.config, removed.name
    entries, note = _list(config, "--projection", name)

    assert [(e["projection"], e["aggregate_id"], e["status"]) for e in entries] == [
        (name, "b", "parked"),
        (name, "b", "parked"),
    ]
    assert removed.note in note
    everything, note = _list(config)
    assert [e["ref"] for e in everything] == [e["ref"] for e in entries]
    assert removed.note in note
    table = run_cli(["parked", "list", "--projection", name, "--config", str(config)])
    assert table.exit_code == 0, table.output
    assert name in table.stdout and removed.note in table.stderr
    shown = run_cli(["parked", "show", f"{entries[0]['ref']}@{name}", "--config", str(config)])
    assert shown.exit_code == 0, shown.output
    assert "refusing b" in json.loads(shown.stdout)["reason"]
    assert removed.note in shown.stderr


def test_a_removed_projection_with_checkpoints_only_lists_nothing(removed: Removed) -> None:
    settings = load_settings(removed.config)
    data = {
        "projections": ["tests.projection_fixtures:Totals"],
        "store": settings.store.model_dump(),
        "sources": {"bank": {"url": settings.sources["bank"].url}},
    }
    config = write_config(removed.config.parent / "totals-only.toml", data)

    entries, note = _list(config, "--projection", "balances")

    assert entries == []
    assert "projection 'balances' is no longer configured" in note


def test_a_removed_projections_events_are_skipped_not_retried(removed: Removed) -> None:
    config, name = removed.config, removed.name
    first, second = (e["ref"] for e in _list(config, "--projection", name)[0])

    retried = run_cli(["parked", "retry", f"{first}@{name}", "--config", str(config)])
    assert retried.exit_code == 2, retried.output
    assert f"{removed.note}: its parked events cannot be applied (no handler)" in retried.stderr
    plain = run_cli(["parked", "retry", first, "--config", str(config)])
    assert plain.exit_code == 2 and "(no handler)" in plain.stderr, plain.output
    assert len(_list(config, "--projection", name)[0]) == 2

    skipped = run_cli(["parked", "skip", f"{first}@{name}", "--config", str(config)])
    assert skipped.exit_code == 0, skipped.output
    assert f"{first}@{name}: skipped" in skipped.stdout
    assert f"held behind it stay parked: {second}" in skipped.stdout
    assert [e["ref"] for e in _list(config, "--projection", name)[0]] == [second]
    assert run_cli(["parked", "skip", second, "--config", str(config)]).exit_code == 0

    assert _list(config, "--projection", name)[0] == []
    every = _list(config, "--projection", name, "--all")[0]
    assert [e["status"] for e in every] == ["skipped", "skipped"]


def test_a_name_neither_configured_nor_stored_is_refused_naming_the_known_ones(
    removed: Removed,
) -> None:
    config = removed.config
    result = run_cli(["parked", "list", "--projection", "total", "--config", str(config)])

    assert result.exit_code == 2, result.output
    assert "unknown projection 'total'" in result.stderr
    assert f"known: balances, {removed.name} (no longer configured)" in result.stderr
    assert result.stdout == ""
