"""``readmodel replay --skip-errors --apply-skipped``: the summary's "still failed" line
counts only the operator-skipped events whose handler failed in the rebuild. One an operator
skipped while the rebuild ran that the rebuild had only held (behind a failed event of its
aggregate: it never ran its handler) is left out, as the operator decided, and said so on a
line of its own. On PostgreSQL and SQLite stores.

Before, it was counted with the events still failing: "2 events skipped by operator
(parked skip) still failed" for shop:2 (still failing) and shop:7 (held behind shop:6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from projections.replay import Replayer
from tests.cli_helpers import run_cli
from tests.operator_skip_helpers import (
    LIVE,
    Once,
    cli_config,
    park_late_events,
    sql_rows,
    sql_skipped,
    statuses,
)


def test_a_held_event_an_operator_skipped_is_not_counted_as_still_failing(
    store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """shop:2 (skipped before) still fails when applied again; shop:6 fails (the rebuild
    skips it, shop:7 held behind it); after the rebuild's pass over shop the operator
    skips shop:7, parked live behind shop:6 (which stays parked)."""
    with sql_skipped(store_url, monkeypatch) as (log, store, engine, projection):
        park_late_events(engine, log, projection.name, monkeypatch, fixed=False)
        (held,) = [p for p in engine.parked(projection.name) if p.position == 7]
        hook = Once(lambda: store.skip_parked(held.id))  # shop:6 stays parked
        fill = Replayer._fill

        def fill_then_skip(self: Replayer, source: str, *args: Any) -> int:
            done = fill(self, source, *args)
            if source == "shop":
                hook()
            return done

        monkeypatch.setattr(Replayer, "_fill", fill_then_skip)
        config = cli_config(tmp_path, store_url)
        command = ["replay", projection.name, "--yes", "--skip-errors", "--apply-skipped"]

        result = run_cli([*command, "--config", config])

        assert result.exit_code == 0, result.output
        assert hook.done
        said = " ".join(result.stdout.split())
        assert "1 event skipped by operator (parked skip) still failed: left out" in said, said
        assert (
            "1 event skipped by operator (parked skip) while the rebuild ran: left out, "
            "still skipped" in said
        ), said
        assert "skipped 1 events (now parked)" in said and "shop:6" in said, said
        assert statuses(engine, projection.name) == {
            "shop:2": "skipped",
            "shop:4": "retried",
            "shop:6": "parked",
            "shop:7": "skipped",
        }
        assert sql_rows(store)[0] == LIVE
