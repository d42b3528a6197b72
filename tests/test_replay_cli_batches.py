"""``readmodel replay P --yes`` with and without ``--batch-size``, on PostgreSQL and SQLite:
the rebuild's transactions (many, or one) leave the totals the events say."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from tests.cli_helpers import run_cli
from tests.projection_fixtures import account_totals
from tests.replay_helpers import Pipeline, deposits, pipeline_config


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
