"""A table named like a projection's shadow that lacks readmodel's mark (PostgreSQL: its
comment; SQLite: its row in ``rm_replay_shadows``) is never dropped unasked, whatever
checkpoints the projection's rebuild left: a user's table of that name survives, with a
warning, and the rebuild is refused saying what to do. A shadow an older readmodel left
(from before the marks) is dropped by ``readmodel replay P --cleanup --drop-unmarked NAME``,
which drops only a table named like P's shadow or old table that readmodel did not mark."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from projections.replay import ReplayOptions
from tests.cli_helpers import run_cli
from tests.replay_helpers import EVENTS, Pipeline, pipeline_config, query

SHADOW = "last_deposit__rebuild"
WAY_OUT = f"readmodel replay last_deposit --cleanup --drop-unmarked {SHADOW}"
ENGINES = ["postgresql", "sqlite"]


def _live(p: Pipeline) -> list[tuple[str, int]]:
    return query(p, "SELECT account, amount FROM last_deposit ORDER BY 1")


def _begun(p: Pipeline) -> None:
    """Checkpoints of a rebuild of ``last_deposit`` under way (its shadow dropped by hand)."""
    replayer = p.replayer("last_deposit")
    with replayer.store.engine.begin() as conn:
        replayer._init_shadow_checkpoints(conn, ["bank"])


def _older_shadow(p: Pipeline) -> None:
    """A shadow and checkpoints as a readmodel from before the marks left them."""
    replayer = p.replayer("last_deposit")
    with replayer.store.engine.begin() as conn:
        replayer.shadow.create(conn)
        replayer._init_shadow_checkpoints(conn, ["bank"])
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"COMMENT ON TABLE {SHADOW} IS NULL")
        else:
            conn.exec_driver_sql("DROP TABLE rm_replay_shadows")


def _cli(p: Pipeline, tmp_path: Path, *args: str) -> object:
    return run_cli(["replay", "last_deposit", *args, "--config", str(pipeline_config(tmp_path, p))])


def _one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("engine", ENGINES)
def test_a_users_table_named_like_a_shadow_survives_while_the_rebuild_s_checkpoints_exist(
    make_pipeline: Callable[[str], Pipeline], tmp_path: Path, engine: str
) -> None:
    p = make_pipeline(engine)
    p.feed("bank", EVENTS)
    live = _live(p)
    _begun(p)
    p.execute(f"CREATE TABLE {SHADOW} (note text)")
    p.execute(f"INSERT INTO {SHADOW} VALUES ('mine')")

    cleanup = _cli(p, tmp_path, "--cleanup")
    replay = _cli(p, tmp_path, "--yes")

    assert cleanup.exit_code == 0, cleanup.output
    assert "nothing to clean up" in cleanup.stdout
    assert WAY_OUT in _one_line(cleanup.stdout), cleanup.stdout
    assert replay.exit_code == 1, replay.output
    assert f"{SHADOW} is named like its shadow table" in _one_line(replay.output)
    assert WAY_OUT in _one_line(replay.output), replay.output
    assert query(p, f"SELECT note FROM {SHADOW}") == [("mine",)]
    assert _live(p) == live


@pytest.mark.parametrize("engine", ENGINES)
def test_an_older_readmodels_shadow_is_dropped_when_named_and_the_rebuild_goes_on(
    make_pipeline: Callable[[str], Pipeline], tmp_path: Path, engine: str
) -> None:
    p = make_pipeline(engine)
    p.feed("bank", EVENTS)
    live = _live(p)
    _older_shadow(p)

    refused = _cli(p, tmp_path, "--yes")
    assert refused.exit_code == 1, refused.output
    assert WAY_OUT in _one_line(refused.output), refused.output
    assert SHADOW in p.tables()

    dropped = _cli(p, tmp_path, "--cleanup", "--drop-unmarked", SHADOW)
    assert dropped.exit_code == 0, dropped.output
    assert f"last_deposit: dropped {SHADOW}" in _one_line(dropped.stdout)
    assert SHADOW not in p.tables()

    p.replayer("last_deposit").run(ReplayOptions())
    assert _live(p) == live
    assert not any(t.endswith("__rebuild") for t in p.tables())


@pytest.mark.parametrize("engine", ENGINES)
def test_drop_unmarked_refuses_a_table_that_is_no_unmarked_lookalike(
    make_pipeline: Callable[[str], Pipeline], tmp_path: Path, engine: str
) -> None:
    """The live table, a table of another name, or a true (marked) shadow named: nothing
    is dropped, exit 2."""
    p = make_pipeline(engine)
    p.feed("bank", EVENTS)
    live = _live(p)
    p.execute("CREATE TABLE mine (note text)")
    replayer = p.replayer("last_deposit")
    with replayer.store.engine.begin() as conn:
        replayer.shadow.create(conn)  # marked: --cleanup alone drops it

    for name in ("last_deposit", "mine", SHADOW):
        result = _cli(p, tmp_path, "--cleanup", "--drop-unmarked", name)
        assert result.exit_code == 2, result.output
        assert f"--drop-unmarked {name}: not a table" in _one_line(result.output)
    alone = _cli(p, tmp_path, "--drop-unmarked", SHADOW)
    assert alone.exit_code == 2, alone.output
    assert "--drop-unmarked goes with --cleanup" in _one_line(alone.output)

    assert {"last_deposit", "mine", SHADOW} <= p.tables()
    assert _live(p) == live


def test_a_users_lookalike_keeps_its_foreign_keys_through_the_cleanup(
    make_pipeline: Callable[[str], Pipeline], tmp_path: Path
) -> None:
    """A shadow's foreign keys to tables outside the projection are dropped by the cleanup
    (they would hold those tables up); a user's table named like the shadow keeps its own."""
    p = make_pipeline("postgresql")
    p.feed("bank", EVENTS)
    p.execute("CREATE TABLE accounts (account text PRIMARY KEY)")
    p.execute(f"CREATE TABLE {SHADOW} (account text CONSTRAINT mine REFERENCES accounts)")
    keys = f"SELECT conname FROM pg_constraint WHERE conrelid = '{SHADOW}'::regclass"

    cleanup = _cli(p, tmp_path, "--cleanup")

    assert cleanup.exit_code == 0, cleanup.output
    assert query(p, keys) == [("mine",)]
