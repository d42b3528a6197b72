"""``readmodel replay --dry-run`` of a projection whose table declares a standalone
``sa.Sequence`` that does not exist yet (PostgreSQL): the dry run makes no sequence, in
the tables' schema or anywhere, for the owner, and a role that may only read gets the
owner's plan instead of failing to create it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config import Settings
from tests.cli_helpers import run_cli
from tests.replay_helpers import (
    EVENTS,
    Pipeline,
    pipeline_config,
    plan_text,
    query,
    read_only_role,
    reader_config,
)

SEQUENCE = "numbered_ticket_seq"
DRY_RUN = ["replay", "numbered", "--dry-run", "--config"]
_OBJECTS = (
    "SELECT n.nspname, c.relname, c.relkind FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
    "AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast_temp%%'"
)


@pytest.fixture
def pg(
    make_settings: Callable[..., Settings],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> Iterator[Pipeline]:
    """The projection ``numbered`` on PostgreSQL, fed; its sequence dropped since (as if
    the model had just declared it): ``make_role`` makes its roles here."""
    pipeline = Pipeline(
        make_settings,
        pg_database(),
        sqlite_database,
        projections=["tests.replay_sequence_fixtures"],
    )
    pipeline.feed("bank", EVENTS)
    pipeline.execute(f"DROP SEQUENCE {SEQUENCE}")
    yield pipeline
    pipeline.close()


def _objects(pg: Pipeline) -> set[tuple[str, str, str]]:
    return {(str(s), str(n), str(k)) for s, n, k in query(pg, _OBJECTS)}


def test_a_dry_run_makes_no_declared_sequence(pg: Pipeline, tmp_path: Path) -> None:
    before = _objects(pg)
    assert not any(name == SEQUENCE for _, name, _ in before)

    dry = run_cli([*DRY_RUN, str(pipeline_config(tmp_path, pg))])

    assert dry.exit_code == 0, dry.output
    assert "table numbered <- numbered__rebuild" in plan_text(dry.stdout), dry.stdout
    assert _objects(pg) == before


def test_a_read_only_dry_run_gets_the_owners_plan(
    pg: Pipeline, make_role: Callable[[str], str], tmp_path: Path
) -> None:
    reader = read_only_role(pg, make_role)
    before = _objects(pg)

    expected = run_cli([*DRY_RUN, str(pipeline_config(tmp_path, pg))])
    dry = run_cli([*DRY_RUN, str(reader_config(tmp_path, pg, reader))])

    assert expected.exit_code == 0, expected.output
    assert dry.exit_code == 0, dry.output
    assert plan_text(dry.stdout) == plan_text(expected.stdout)
    assert _objects(pg) == before
