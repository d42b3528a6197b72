"""Figures the metrics endpoint reads at scrape time say nothing they do not know: for a
source that cannot be reached, ``readmodel_source_up`` is 0 and there is no outbox backlog
or age sample for it (an age of 0 would tell an alert that nothing waits), nor an age
sample for an outbox whose rows carry no time while some wait."""

from __future__ import annotations

from pathlib import Path

from outbox.db import create_engine
from tests.cli_helpers import run_cli, write_config
from tests.metrics_helpers import collected
from tests.outbox_helpers import insert_events


def test_an_unreachable_source_gives_no_backlog_figures(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path}/store.db"},
            "sources": {
                "down": {"url": "postgresql://postgres@127.0.0.1:1/rm_test_nowhere"},
                "shop": {"url": f"sqlite:///{tmp_path}/shop.db"},
            },
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    assert run_cli(["outbox", "init", "--source", "shop", "--config", str(config)]).exit_code == 0
    families = collected(config)

    samples = {
        (family.name, sample.labels.get("source")): sample.value
        for family in families
        for sample in family.samples
    }
    assert samples[("readmodel_source_up", "down")] == 0
    assert samples[("readmodel_source_up", "shop")] == 1
    assert ("readmodel_outbox_undelivered", "down") not in samples
    assert ("readmodel_outbox_oldest_age_seconds", "down") not in samples
    assert samples[("readmodel_outbox_undelivered", "shop")] == 0
    assert samples[("readmodel_outbox_oldest_age_seconds", "shop")] == 0  # none waits
    assert samples[("readmodel_log_head", "down")] == 0  # the log answers for it


def test_an_outbox_without_a_time_column_gives_no_age_while_rows_wait(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path}/store.db"},
            "sources": {
                "shop": {"url": f"sqlite:///{tmp_path}/shop.db", "columns": {"occurred_at": ""}},
                "bank": {"url": f"sqlite:///{tmp_path}/bank.db", "columns": {"occurred_at": ""}},
            },
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    for source in ("shop", "bank"):
        initialized = run_cli(["outbox", "init", "--source", source, "--config", str(config)])
        assert initialized.exit_code == 0, initialized.output
    shop = create_engine(f"sqlite:///{tmp_path}/shop.db")
    try:
        insert_events(
            shop, [("order", "o1", "OrderPlaced", {}), ("order", "o2", "OrderPlaced", {})]
        )
    finally:
        shop.dispose()
    families = collected(config)

    samples = {
        (family.name, sample.labels.get("source")): sample.value
        for family in families
        for sample in family.samples
    }
    assert samples[("readmodel_outbox_undelivered", "shop")] == 2
    assert ("readmodel_outbox_oldest_age_seconds", "shop") not in samples  # not known
    assert samples[("readmodel_outbox_undelivered", "bank")] == 0
    assert samples[("readmodel_outbox_oldest_age_seconds", "bank")] == 0  # none waits
