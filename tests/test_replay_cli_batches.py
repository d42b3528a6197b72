"""``readmodel replay P --yes`` with and without ``--batch-size``, on PostgreSQL and SQLite:
the rebuild's transactions (many, or one) leave the totals the events say."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from outbox.relay import Relay
from projections.replay import ReplayHooks, ReplayOptions
from tests.cli_helpers import run_cli
from tests.outbox_helpers import insert_events
from tests.projection_fixtures import account_totals
from tests.replay_helpers import Events, Pipeline, deposits, last_seqs, pipeline_config


@pytest.fixture
def pipeline(
    make_settings: Callable[..., Settings], store_url: str, sqlite_database: Any
) -> Iterator[Pipeline]:
    p = Pipeline(make_settings, store_url, sqlite_database)
    yield p
    p.close()


@pytest.mark.parametrize("batch", [None, "7", "1000"])
def test_cli_rebuild_with_and_without_a_batch_size(
    pipeline: Pipeline, tmp_path: Path, batch: str | None
) -> None:
    events = deposits(900, 13, seed=21)
    pipeline.feed("bank", events)
    pipeline.execute("UPDATE account_totals SET total = 0")
    config = str(pipeline_config(tmp_path, pipeline))
    args = ["replay", "totals", "--yes", "--config", config]
    done = run_cli([*args, *(["--batch-size", batch] if batch else [])])
    assert done.exit_code == 0, done.output
    assert "rebuilt and swapped in: 900 events" in done.stdout
    totals: dict[str, int] = {}
    for _, account, _, payload in events:
        totals[account] = totals.get(account, 0) + payload["amount"]
    assert {k: r["total"] for k, r in pipeline.rows(account_totals).items()} == totals


class _SteadyLiveWrites(ReplayHooks):
    """At each shadow batch committed, as many new events as a batch holds are relayed and
    applied live: the rebuild's backlog never falls below its batch size. Stops writing
    after ``limit`` batches (a replay waiting for a quiet moment would otherwise never end)."""

    def __init__(self, pipeline: Pipeline, per_batch: int, limit: int) -> None:
        self.pipeline = pipeline
        self.per_batch = per_batch
        self.limit = limit
        self.batches = 0
        self.written: Events = []
        self.seqs: dict[str, int] = {}

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        self.batches += 1
        if self.batches > self.limit:
            return
        events = deposits(self.per_batch, 5, seed=self.batches, start=self.seqs)
        self.seqs = last_seqs(events)
        insert_events(self.pipeline.engines["bank"], events)
        Relay(self.pipeline.settings, log=self.pipeline.runtime.log).drain()
        self.pipeline.runtime.engine.catch_up(["totals"])
        self.written += events


def test_a_rebuild_with_a_small_batch_swaps_while_live_writes_keep_its_backlog_up(
    pipeline: Pipeline,
) -> None:
    """The catch-up passes end once one no longer shrinks the backlog: the swap applies what
    is left, under the live lanes' locks. They went on while the backlog was at least a batch
    (``--batch-size``), so a small batch under steady writes never swapped."""
    first = deposits(60, 5, seed=3)
    pipeline.feed("bank", first)
    hooks = _SteadyLiveWrites(pipeline, per_batch=6, limit=100)
    hooks.seqs = last_seqs(first)

    summary = pipeline.replayer("totals", hooks=hooks, batch=6).run(ReplayOptions())
    pipeline.runtime.engine.catch_up(["totals"])

    assert hooks.batches < hooks.limit, "the rebuild waited for the live writes to stop"
    assert summary.tables == ["account_totals"]
    totals: dict[str, int] = {}
    for _, account, _, payload in [*first, *hooks.written]:
        totals[account] = totals.get(account, 0) + payload["amount"]
    assert {k: r["total"] for k, r in pipeline.rows(account_totals).items()} == totals
