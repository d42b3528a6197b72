"""A blue/green rebuild (PostgreSQL) of tables nobody changed by hand, whose columns declare
many kinds of server default: neither ``--dry-run`` (as the owner or a role that may only
read) nor the replay warns of a declared default or NOT NULL, before or after a first
replay (the live tables are then the former shadows), and an enum column keeps its type
(one in another schema than its table's too): the shadow makes no type of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
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

_ENUMS = """
SELECT c.relname, a.attname, format('%%I.%%I', n.nspname, t.typname)
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE t.typtype = 'e' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY 1, 2
"""
ENUMS = [
    ("Orders%s", "public_status", "public.public_status"),
    ("Orders%s", "status", "sales.status"),
    ("serials", "grade", "sales.grade"),
    ("serials", "kind", "public.kind"),
]
_TYPES = "SELECT count(*) FROM pg_type WHERE typtype = 'e'"


@pytest.fixture
def pg(
    make_settings: Callable[..., Settings],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> Iterator[Pipeline]:
    """The projection ``many_defaults`` on PostgreSQL, its schemas made first."""
    url = pg_database()
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA sales")
        conn.exec_driver_sql("CREATE SCHEMA util")
        conn.exec_driver_sql(
            "CREATE FUNCTION util.make_code() RETURNS text LANGUAGE sql AS $$ SELECT 'c' $$"
        )
    engine.dispose()
    pipeline = Pipeline(
        make_settings, url, sqlite_database, ["tests.replay_many_defaults_fixtures"]
    )
    yield pipeline
    pipeline.close()


@pytest.fixture
def many(pg: Pipeline) -> Pipeline:
    """``pg`` (which ``make_role`` cleans up after) with this module's projection."""
    return pg


def test_replays_of_what_nobody_changed_warn_of_nothing_and_keep_enum_types(
    many: Pipeline,
) -> None:
    many.feed("bank", EVENTS)
    assert query(many, _ENUMS) == ENUMS
    (types,) = query(many, _TYPES)

    for _ in range(3):  # the second and third find the former shadows live
        plan = many.replayer("many_defaults").plan(ReplayOptions())
        assert plan.warnings == [] and plan.carried == []
        with capture_logs() as logs:
            many.replayer("many_defaults").run(ReplayOptions())
        assert [entry for entry in logs if entry["log_level"] == "warning"] == []

    assert query(many, _ENUMS) == ENUMS
    assert query(many, _TYPES) == [types]
    assert query(many, 'SELECT DISTINCT status::text, public_status::text FROM sales."Orders%%s"')
    assert set(query(many, "SELECT DISTINCT kind::text, grade::text FROM serials")) == {("x", "p")}


def test_a_dry_run_after_a_replay_warns_of_no_column_as_the_owner_or_a_reader(
    many: Pipeline, make_role: Callable[[str], str], tmp_path: Path
) -> None:
    many.feed("bank", EVENTS)
    many.replayer("many_defaults").run(ReplayOptions())
    reader = read_only_role(many, make_role, ("public", "sales", "util"))
    dry_run = ["replay", "many_defaults", "--dry-run", "--config"]

    owner = run_cli([*dry_run, str(pipeline_config(tmp_path, many))])
    dry = run_cli([*dry_run, str(reader_config(tmp_path, many, reader))])

    assert owner.exit_code == 0, owner.output
    assert dry.exit_code == 0, dry.output
    for output in (owner.stdout, dry.stdout):
        assert " warning: column " not in " ".join(plan_lines(output)), output
    assert plan_text(dry.stdout) == plan_text(owner.stdout)
