"""A projection's lag in seconds is an age on the read store's clock: ``status``, ``health``
and the metrics endpoint give the same lag whatever the worker host's clock says.

The read store here is made to run an hour off this host, as a database server with a
skewed clock does: its ``now()`` is a function of the database (``public.now()``, found
before ``pg_catalog``'s by the database's ``search_path``), and the log's events are
stamped by that clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from tests.cli_helpers import run_cli, write_config
from tests.metrics_helpers import collected, skew_database_clock
from tests.outbox_helpers import init_outbox, insert_events

BOUND = 300  # health.max_lag_seconds


def _stamp_events(url: str, seconds_ago: int) -> float:
    """Stamp every log event ``seconds_ago`` by the store's clock; returns how far that clock
    is from this host's, in seconds."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE rm_event_log SET recorded_at = now() - make_interval(secs => :s)"),
                {"s": seconds_ago},
            )
            skew = conn.execute(
                sa.text("SELECT extract(epoch FROM now() - pg_catalog.now())")
            ).scalar_one()
    finally:
        engine.dispose()
    return float(skew)


def _lagging_store(
    tmp_path: Path, pg_database: Callable[[], str], offset: str, seconds_ago: int
) -> Path:
    """A relayed log of 3 events no projection applied yet, in a store ``offset`` off."""
    source_url, store_url = pg_database(), pg_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store_url},
            "sources": {"bank": {"url": source_url}},
            "health": {"max_lag_seconds": f"{BOUND}s"},
        },
    )
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    source = create_engine(source_url)
    try:
        insert_events(
            source,
            [("account", f"acct-{i}", "Deposited", {"amount": 1, "seq": 1}) for i in range(3)],
        )
    finally:
        source.dispose()
    relayed = run_cli(["relay", "--once", "--config", str(config)])
    assert relayed.exit_code == 0, relayed.output
    skew_database_clock(store_url, offset)
    skew = _stamp_events(store_url, seconds_ago)
    assert abs(abs(skew) - 3600) < 60, skew  # the store's clock really is an hour off
    return config


def _lags(config: Path) -> tuple[float, float]:
    """The projection's lag in seconds by ``status --json`` and by the metrics endpoint."""
    status = run_cli(["status", "--json", "--config", str(config)])
    assert status.exit_code == 0, status.output
    (totals,) = json.loads(status.stdout)["projections"]
    families = collected(config)
    (metric,) = [
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == "readmodel_projection_lag_seconds"
    ]
    return totals["lag_seconds"], metric


def test_a_store_clock_behind_the_host_does_not_make_a_fresh_lag_old(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    config = _lagging_store(tmp_path, pg_database, "-1 hour", seconds_ago=5)

    status_lag, metric_lag = _lags(config)
    assert 5 <= status_lag < 60, status_lag
    assert 5 <= metric_lag < 60, metric_lag
    health = run_cli(["health", "--config", str(config)])
    assert health.exit_code == 0, health.output


def test_a_store_clock_ahead_of_the_host_does_not_hide_an_old_lag(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    config = _lagging_store(tmp_path, pg_database, "1 hour", seconds_ago=600)

    status_lag, metric_lag = _lags(config)
    assert 600 <= status_lag < 660, status_lag
    assert 600 <= metric_lag < 660, metric_lag
    health = run_cli(["health", "--config", str(config)])
    assert health.exit_code == 1, health.output
    assert "projection totals (source bank): lag 6" in health.stderr
    assert f"(bound {BOUND}s)" in health.stderr
