"""A blue/green rebuild gives the new table what the projection declares for its columns
(PostgreSQL): a declared default changed or dropped by hand on the live table, or a declared
NOT NULL dropped by hand, is not carried (the live table cannot tell a hand-made change from
what an earlier version of the model declared); ``--dry-run``, as the owner or a role that
may only read, warns of each. Per-column settings of such a column are carried."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from config import Settings
from projections.replay import ReplayOptions
from tests.cli_helpers import run_cli
from tests.replay_helpers import (
    EVENTS,
    Pipeline,
    pipeline_config,
    plan_lines,
    plan_text,
    query,
    read_only_role,
    reader_config,
)

_COLUMNS = """
SELECT a.attname, a.attnotnull, pg_get_expr(d.adbin, d.adrelid), coalesce(a.attstattarget, -1),
       a.attstorage::text
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = 'account_mood'::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""
DECLARED = [
    ("account", True, None, -1, "x"),
    ("mood", False, "'happy'::mood", -1, "p"),
    ("label", True, "'plain'::text", -1, "x"),
    ("seq", True, None, -1, "p"),
]
TAKEN = [
    "column account_mood.mood: the live default 'sad'::mood is not carried, the rebuilt "
    "table takes the declared 'happy'::mood",
    "column account_mood.label: the live table has no default, the rebuilt table takes "
    "the declared 'plain'::text",
    "column account_mood.seq: the live table allows NULL, the rebuilt table takes the "
    "declared NOT NULL",
]


@pytest.fixture
def pg(
    make_settings: Callable[..., Settings],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> Iterator[Pipeline]:
    pipeline = Pipeline(
        make_settings, pg_database(), sqlite_database, ["tests.replay_default_fixtures"]
    )
    yield pipeline
    pipeline.close()


@pytest.fixture
def moods(pg: Pipeline) -> Pipeline:
    """``pg`` (which ``make_role`` cleans up after) with this module's projection."""
    return pg


def _columns(p: Pipeline) -> list[tuple[object, ...]]:
    return [tuple(row) for row in query(p, _COLUMNS)]


def _change_by_hand(p: Pipeline) -> None:
    for action in ("mood SET DEFAULT 'sad'", "label DROP DEFAULT", "seq DROP NOT NULL"):
        p.execute(f"ALTER TABLE account_mood ALTER COLUMN {action}")


def _replay(p: Pipeline) -> None:
    for _ in range(2):
        p.replayer("account_mood").run(ReplayOptions())
    assert not any(t.endswith(("__rebuild", "__old")) for t in p.tables())


def test_what_is_declared_and_untouched_stays_and_is_not_warned_of(moods: Pipeline) -> None:
    moods.feed("bank", EVENTS)
    assert _columns(moods) == DECLARED

    plan = moods.replayer("account_mood").plan(ReplayOptions())
    _replay(moods)

    assert _columns(moods) == DECLARED
    assert plan.warnings == [] and plan.carried == []
    assert set(query(moods, "SELECT DISTINCT mood::text, label FROM account_mood")) == {
        ("happy", "plain")
    }


def test_declared_defaults_and_not_null_changed_by_hand_are_warned_of_and_not_carried(
    moods: Pipeline,
) -> None:
    moods.feed("bank", EVENTS)
    _change_by_hand(moods)

    plan = moods.replayer("account_mood").plan(ReplayOptions())
    with capture_logs() as logs:
        _replay(moods)

    assert _columns(moods) == DECLARED
    assert plan.warnings == TAKEN
    warned = [entry["detail"] for entry in logs if entry["log_level"] == "warning"]
    assert warned == TAKEN  # by the first replay: the second finds them as declared
    assert not any("account_mood.mood" in line for line in plan.carried), plan.carried
    assert set(query(moods, "SELECT DISTINCT mood::text, label FROM account_mood")) == {
        ("happy", "plain")
    }


def test_settings_of_a_column_with_a_declared_default_are_carried(moods: Pipeline) -> None:
    moods.feed("bank", EVENTS)
    moods.execute("ALTER TABLE account_mood ALTER COLUMN label SET STATISTICS 321")
    moods.execute("ALTER TABLE account_mood ALTER COLUMN label SET STORAGE MAIN")

    plan = moods.replayer("account_mood").plan(ReplayOptions())
    _replay(moods)

    assert plan.carried == [
        "statistics 321 of account_mood.label",
        "storage MAIN of account_mood.label",
    ]
    assert plan.warnings == []
    assert _columns(moods)[2] == ("label", True, "'plain'::text", 321, "m")


def test_a_role_that_may_only_read_gets_the_same_warnings(
    moods: Pipeline, make_role: Callable[[str], str], tmp_path: Path
) -> None:
    moods.feed("bank", EVENTS)
    _change_by_hand(moods)
    reader = read_only_role(moods, make_role)
    dry_run = ["replay", "account_mood", "--dry-run", "--config"]

    owner = run_cli([*dry_run, str(pipeline_config(tmp_path, moods))])
    dry = run_cli([*dry_run, str(reader_config(tmp_path, moods, reader))])

    assert owner.exit_code == 0, owner.output
    assert dry.exit_code == 0, dry.output
    for output in (owner.stdout, dry.stdout):
        text = " ".join(plan_lines(output))
        warned = [w for w in text.split(" warning: ")[1:] if w.startswith("column ")]
        assert [w.removesuffix(" dry run: nothing was changed") for w in warned] == TAKEN, text
    assert plan_text(dry.stdout) == plan_text(owner.stdout)
