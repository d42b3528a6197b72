"""``readmodel replay --dry-run`` tells what was made by hand on the live tables from what
the model declares by making the declared tables as ``<table>__dry_run`` copies, in the live
table's schema when its role may create there. They were made with ``checkfirst``: a table
of that name already there (one made by hand, another projection's) was not made but read
as the declared model, and the plan listed a declared index as one made by hand. The copies
are now made temporary where such a table is; and a projection's table of that name is no
longer refused when the projections are loaded (it was, on SQLite too, which makes none)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import Settings
from tests.cli_helpers import run_cli
from tests.replay_helpers import (
    EVENTS,
    PROJECTIONS,
    Pipeline,
    pipeline_config,
    plan_lines,
    query,
    read_only_role,
    reader_config,
)

DRY_RUN_TABLE = "tests.rebuild_name_fixtures:DryRunTable"
CARRIED = "the swap carries: index by_hand on last_deposit"
DECLARED = "the swap carries: index ix_last_deposit_seq on last_deposit"


@pytest.fixture
def make(
    make_settings: Callable[..., Settings],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def build(engine: str = "postgresql", projections: list[str] = PROJECTIONS) -> Pipeline:
        url = pg_database() if engine == "postgresql" else sqlite_database()
        made.append(Pipeline(make_settings, url, sqlite_database, projections=projections))
        return made[-1]

    yield build
    for pipeline in made:
        pipeline.close()


def _dry_run(config: Path) -> list[str]:
    result = run_cli(["replay", "last_deposit", "--dry-run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return plan_lines(result.stdout)


def test_a_table_of_the_dry_run_copys_name_is_not_read_as_the_model(
    make: Callable[..., Pipeline], tmp_path: Path
) -> None:
    p = make()
    p.feed("bank", EVENTS)
    p.execute("CREATE INDEX by_hand ON last_deposit (amount, seq)")
    expected = _dry_run(pipeline_config(tmp_path, p))
    assert CARRIED in expected and DECLARED not in expected
    # A table of the user's under the copy's name (with the declared index's twin on it).
    p.execute("CREATE TABLE last_deposit__dry_run (LIKE last_deposit INCLUDING ALL)")
    p.execute("INSERT INTO last_deposit__dry_run SELECT * FROM last_deposit")

    assert _dry_run(pipeline_config(tmp_path, p)) == expected
    assert query(p, "SELECT count(*) FROM last_deposit__dry_run") == [(7,)]  # left alone


def test_a_projection_table_of_the_dry_run_copys_name_loads_and_is_no_model(
    make: Callable[..., Pipeline], tmp_path: Path
) -> None:
    p = make(projections=[*PROJECTIONS, DRY_RUN_TABLE])
    p.feed("bank", EVENTS)
    p.execute("CREATE INDEX by_hand ON last_deposit (amount, seq)")

    lines = _dry_run(pipeline_config(tmp_path, p))
    assert CARRIED in lines and DECLARED not in lines
    assert len(p.rows(p.runtime.engine.projection("deposit_trials").tables[0])) == 7


def test_a_projection_table_of_the_dry_run_copys_name_loads_on_sqlite(
    make: Callable[..., Pipeline], tmp_path: Path
) -> None:
    p = make("sqlite", [*PROJECTIONS, DRY_RUN_TABLE])
    p.feed("bank", EVENTS)

    lines = _dry_run(pipeline_config(tmp_path, p))
    assert "table last_deposit <- last_deposit__rebuild" in lines


def test_a_role_that_may_not_make_temporary_copies_is_told_which_table_is_in_the_way(
    pg: Pipeline, make_role: Callable[[str], str], tmp_path: Path
) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("CREATE TABLE last_deposit__dry_run (LIKE last_deposit INCLUDING ALL)")
    role = read_only_role(pg, make_role)
    pg.execute(f'GRANT CREATE ON SCHEMA public TO "{role}"')
    database = sa.make_url(pg.store_url).database
    pg.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')

    lines = " ".join(_dry_run(reader_config(tmp_path, pg, role)))
    assert (
        "(not listed: indexes, constraints and column defaults made by hand; telling them "
        "from the declared ones takes tables made as declared, named last_deposit__dry_run, "
        "which tables of the database are already, and this role may not make temporary "
        "ones instead (TEMPORARY on the database): rename those tables)"
    ) in lines
    assert DECLARED not in lines
