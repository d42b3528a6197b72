"""A lane's lag is its own events past its checkpoint: those of its source, its partition and
the event types its projection subscribes to, up to the log head. A partition that has
applied all of its events shows no lag when the source's head moves on with events of other
partitions (or of types the projection does not read), in ``status``, ``health`` and the
metrics alike; its ``lag_seconds`` is that of any caught-up lane (``null``, 0 in the gauge).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from outbox.envelope import aggregate_hash
from tests.cli_helpers import run_cli, write_config
from tests.metrics_helpers import collected
from tests.outbox_helpers import init_outbox, insert_events

PARTITIONS = 4  # Totals'


def _account_in(partition: int) -> str:
    """An account whose events go to ``partition`` of Totals."""
    return next(
        f"acct-{i}"
        for i in range(1000)
        if aggregate_hash("account", f"acct-{i}") % PARTITIONS == partition
    )


def _deposits(account: str, count: int) -> list[tuple[str, str, str, dict[str, int]]]:
    return [("account", account, "Deposited", {"amount": 1, "seq": s}) for s in range(1, count + 1)]


def _stamp_old(store_url: str, event_type: str, seconds: int) -> None:
    """Stamp the log's events of ``event_type`` ``seconds`` ago, on the store's clock."""
    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                stamp = f"datetime('now', '-{seconds} seconds')"
            else:
                stamp = f"now() - make_interval(secs => {seconds})"
            conn.execute(
                sa.text(f"UPDATE rm_event_log SET recorded_at = {stamp} WHERE event_type = :t"),
                {"t": event_type},
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
def test_a_partition_with_nothing_of_its_own_waiting_does_not_lag(
    store: str,
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    store_url = pg_database() if store == "postgresql" else sqlite_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store_url},
            "sources": {"bank": {"url": pg_database()}},
        },
    )
    settings = load_settings(config)
    init_outbox(settings.sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    quiet, busy = _account_in(3), _account_in(1)
    source = create_engine(settings.sources["bank"].url)
    try:
        insert_events(source, _deposits(quiet, 3))  # partition 3: all of it applied below
        assert run_cli(["relay", "--once", "--config", str(config)]).exit_code == 0
        caught_up = run_cli(["run", "--until-caught-up", "--config", str(config)])
        assert caught_up.exit_code == 0, caught_up.output
        # The head moves on: events of a type Totals does not read (partition 3's account
        # among them), then deposits of partition 1 only.
        others = [("account", _account_in(p), "Withdrawn", {"amount": 1}) for p in range(4)]
        insert_events(source, [*others, *_deposits(busy, 5)])
    finally:
        source.dispose()
    assert run_cli(["relay", "--once", "--config", str(config)]).exit_code == 0
    _stamp_old(store_url, "Withdrawn", 600)  # past health.max_lag_seconds (300), unread

    status = run_cli(["status", "--json", "--config", str(config)])
    assert status.exit_code == 0, status.output
    (totals,) = json.loads(status.stdout)["projections"]
    lanes = {lane["partition"]: lane for lane in totals["lanes"]}
    assert {p: (lane["checkpoint"], lane["head"]) for p, lane in lanes.items()} == {
        p: (3, 12) for p in range(PARTITIONS)
    }
    assert {p: lane["lag_events"] for p, lane in lanes.items()} == {0: 0, 1: 5, 2: 0, 3: 0}
    assert [lanes[p]["lag_seconds"] for p in (0, 2, 3)] == [None, None, None]
    assert 0 <= lanes[1]["lag_seconds"] < 60  # its deposits, not the old Withdrawn
    assert (totals["lag_events"], totals["lag_seconds"]) == (5, lanes[1]["lag_seconds"])

    health = run_cli(["health", "--config", str(config), "--max-lag-events", "5"])
    assert health.exit_code == 0, health.output
    lagging = run_cli(["health", "--config", str(config), "--max-lag-events", "4"])
    assert lagging.exit_code == 1, lagging.output
    assert "projection totals (source bank): lag 5 events (bound 4)" in lagging.stderr

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collected(config)
        for sample in family.samples
    }
    lag = (("projection", "totals"), ("source", "bank"))
    assert samples[("readmodel_projection_lag_events", lag)] == 5
    assert 0 <= samples[("readmodel_projection_lag_seconds", lag)] < 60


def test_past_the_counted_positions_every_position_counts_for_each_lane(
    pg_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A projection far behind a long log: its lanes' own events are counted within
    ``COUNTED_POSITIONS`` of the slowest checkpoint, and every position past them counts for
    each lane (an upper bound), so a status call or a scrape reads no more of the log."""
    monkeypatch.setattr("projections.status.COUNTED_POSITIONS", 5)
    store_url = pg_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store_url},
            "sources": {"bank": {"url": pg_database()}},
        },
    )
    settings = load_settings(config)
    init_outbox(settings.sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    source = create_engine(settings.sources["bank"].url)
    try:
        insert_events(source, _deposits(_account_in(3), 3))
        assert run_cli(["relay", "--once", "--config", str(config)]).exit_code == 0
        caught_up = run_cli(["run", "--until-caught-up", "--config", str(config)])
        assert caught_up.exit_code == 0, caught_up.output
        # Positions 4-7 of a type Totals does not read, 8-12 deposits of partition 1: the
        # positions counted are 4-8, those past them 9-12.
        others = [("account", _account_in(p), "Withdrawn", {"amount": 1}) for p in range(4)]
        insert_events(source, [*others, *_deposits(_account_in(1), 5)])
    finally:
        source.dispose()
    assert run_cli(["relay", "--once", "--config", str(config)]).exit_code == 0
    _stamp_old(store_url, "Withdrawn", 600)

    status = run_cli(["status", "--json", "--config", str(config)])
    assert status.exit_code == 0, status.output
    (totals,) = json.loads(status.stdout)["projections"]
    lanes = {lane["partition"]: lane for lane in totals["lanes"]}
    # Partition 1: its one deposit counted, and the 4 positions past; the others: 4 past.
    assert {p: lane["lag_events"] for p, lane in lanes.items()} == {0: 4, 1: 5, 2: 4, 3: 4}
    # The first event past the counted ones is a fresh deposit, not an old Withdrawn.
    assert all(0 <= lane["lag_seconds"] < 60 for lane in lanes.values()), lanes
    assert totals["lag_events"] == 17
