"""On SQLite a replay and ``--cleanup`` drop only the shadows readmodel's replays made
(recorded in ``rm_replay_shadows``), never a table merely named like one (a user's
``last_deposit__rebuild``). A true leftover (a replay killed with SIGKILL half-way) is still
dropped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import Settings
from outbox.errors import StoreError
from projections.replay import ReplayOptions
from projections.store_tables import checkpoints
from tests.cli_helpers import run_cli
from tests.projection_fixtures import SLOW
from tests.replay_helpers import (
    EVENTS,
    PROJECTIONS,
    Pipeline,
    deposits,
    last_seqs,
    pipeline_config,
    query,
)

LOOKALIKE = "last_deposit__rebuild"


@pytest.fixture
def lite(
    make_settings: Callable[..., Settings], sqlite_database: Callable[[], str]
) -> Iterator[Pipeline]:
    """``last_deposit`` and ``totals`` on a SQLite store, beside a table of the user's named
    like ``last_deposit``'s shadow. (Another projection's table of that name is refused when
    the projections are loaded: tests/test_replay_rebuild_names.py.)"""
    pipeline = Pipeline(make_settings, sqlite_database(), sqlite_database, PROJECTIONS)
    pipeline.execute(f"CREATE TABLE {LOOKALIKE} (account text PRIMARY KEY, deposits bigint)")
    pipeline.execute(f"INSERT INTO {LOOKALIKE} VALUES ('acct-0', 3), ('acct-1', 4)")
    yield pipeline
    pipeline.close()


def _counts(p: Pipeline) -> list[tuple[str, int]]:
    return query(p, f"SELECT account, deposits FROM {LOOKALIKE} ORDER BY 1")


def _deposits(p: Pipeline) -> list[tuple[str, int]]:
    return query(p, "SELECT account, amount FROM last_deposit ORDER BY 1")


def test_a_users_table_named_like_a_shadow_survives_cleanup_and_stops_a_rebuild(
    make_settings: Callable[..., Settings], sqlite_database: Callable[[], str]
) -> None:
    pipeline = Pipeline(make_settings, sqlite_database(), sqlite_database)
    try:
        pipeline.feed("bank", EVENTS)
        live = _deposits(pipeline)
        pipeline.execute(f"CREATE TABLE {LOOKALIKE} (note text)")
        pipeline.execute(f"INSERT INTO {LOOKALIKE} VALUES ('mine')")

        assert pipeline.replayer("last_deposit").cleanup() == []
        with pytest.raises(StoreError, match=LOOKALIKE):
            pipeline.replayer("last_deposit").run(ReplayOptions())

        assert query(pipeline, f"SELECT note FROM {LOOKALIKE}") == [("mine",)]
        assert _deposits(pipeline) == live
    finally:
        pipeline.close()


def test_a_shadow_a_killed_replay_left_is_dropped_beside_the_lookalike(
    lite: Pipeline, tmp_path: Path
) -> None:
    """SIGKILL half-way through a rebuild of ``totals`` (shadow ``account_totals__rebuild``):
    ``--cleanup`` drops that shadow, and ``last_deposit``'s leaves the user's table; a
    replay of ``totals`` then rebuilds."""
    applied = deposits(300, 9, seed=15)
    lite.feed("bank", applied)
    lite.feed("bank", deposits(6000, 50, seed=16, start=last_seqs(applied)), apply=False)
    counts = _counts(lite)
    config = str(pipeline_config(tmp_path, lite))
    command = [sys.executable, "-m", "workers.cli", "replay", "totals", "--yes"]
    replay = subprocess.Popen(
        [*command, "--batch-size", "50", "--config", config],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, SLOW: "0.002"},  # 12 s at least: the kill comes half-way
    )
    shadow = sa.select(sa.func.max(checkpoints.c.position)).where(
        checkpoints.c.projection == "totals__rebuild"
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert replay.poll() is None, replay.communicate()
            assert time.monotonic() < deadline, "the rebuild never started"
            with lite.runtime.log.engine.connect() as conn:
                if (conn.execute(shadow).scalar() or 0) > 1000:
                    break
            time.sleep(0.02)
        replay.send_signal(signal.SIGKILL)
        replay.communicate(timeout=60)
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait()
    assert replay.returncode == -signal.SIGKILL
    assert "account_totals__rebuild" in lite.tables()

    mine = run_cli(["replay", "last_deposit", "--cleanup", "--config", config])
    assert mine.exit_code == 0, mine.output
    assert LOOKALIKE in lite.tables() and _counts(lite) == counts
    cleanup = run_cli(["replay", "totals", "--cleanup", "--config", config])
    assert cleanup.exit_code == 0, cleanup.output
    assert "account_totals__rebuild" in cleanup.stdout
    assert "account_totals__rebuild" not in lite.tables()
    assert _counts(lite) == counts

    lite.replayer("totals").run(ReplayOptions())
    assert not any(t.endswith("__rebuild") for t in lite.tables() - {LOOKALIKE})
    assert _counts(lite) == counts
