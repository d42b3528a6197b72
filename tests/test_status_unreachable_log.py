"""The event log's store cannot be reached: ``status`` still reports what it can read (the
sources' undelivered rows, the broker's queue), marks the log's store unreachable in
``stores`` (its projections with it: their lag is measured against the log) and exits 3, as
for one unreachable document store (tests/test_metrics_unreachable_store.py); ``metrics``
gives ``readmodel_store_up{store="default"} 0`` beside the sources' and broker's figures.
Before, the whole report failed: nothing but the store's error was said."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from config import load_settings
from outbox.db import create_engine
from tests.cli_helpers import run_cli, write_config
from tests.metrics_helpers import collected
from tests.outbox_helpers import init_outbox, insert_events

SECRET = "S3cret-Log-0815"
DOWN = f"postgresql://reader:{SECRET}@127.0.0.1:1/readmodel"  # nothing listens on port 1


@pytest.fixture
def config(
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
) -> Path:
    """``totals`` in a read store (the log's) that refuses connections; the source ``bank``
    holds 3 undelivered rows; a Redis broker."""
    path = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": DOWN},
            "broker": broker_for("redis"),
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )
    settings = load_settings(path)
    init_outbox(settings.sources["bank"], "bank")
    bank = create_engine(settings.sources["bank"].url)
    try:
        insert_events(
            bank,
            [("account", f"acct-{i}", "Deposited", {"amount": 1, "seq": 1}) for i in range(3)],
        )
    finally:
        bank.dispose()
    return path


def test_status_json_reports_the_sources_and_broker_and_the_log_unreachable(
    config: Path,
) -> None:
    result = run_cli(["status", "--json", "--timeout", "5", "--config", str(config)])

    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    (bank,) = document["sources"]
    assert (bank["source"], bank["undelivered"], bank["error"]) == ("bank", 3, None)
    assert (bank["log_head"], bank["parked"]) == (None, None)  # in the log: not known
    assert (document["broker"]["broker"], document["broker"]["error"]) == ("redis", None)
    assert document["broker"]["ready"] == 0
    assert document["projections"] == []
    (store,) = document["stores"]
    assert (store["store"], store["projections"]) == ("default", ["totals"])
    assert "read store" in store["error"] and "Connection refused" in store["error"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "read store" in errors[0], result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_status_tables_show_the_sources_with_the_log_head_unknown(config: Path) -> None:
    result = run_cli(["status", "--timeout", "5", "--config", str(config)], env={"COLUMNS": "120"})

    assert result.exit_code == 3, result.output
    (row,) = [line for line in result.stdout.splitlines() if "│ bank" in line]
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert (cells[2], cells[4], cells[5]) == ("3", "?", "?")  # undelivered, log head, parked
    assert "read store" in result.stderr and "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_metrics_give_the_sources_figures_and_the_log_store_down(config: Path) -> None:
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collected(config)
        for sample in family.samples
    }

    assert samples[("readmodel_store_up", (("store", "default"),))] == 0
    assert samples[("readmodel_source_up", (("source", "bank"),))] == 1
    assert samples[("readmodel_outbox_undelivered", (("source", "bank"),))] == 3
    assert not [key for key in samples if key[0] == "readmodel_log_head"]
    assert [key for key in samples if key[0] == "readmodel_broker_up"]
