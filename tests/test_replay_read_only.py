"""``readmodel replay --dry-run`` reads only: a role that may read the projection's and the
worker's tables (SELECT, USAGE on the schema) and create nothing in the schema gets the plan
the owner gets (PostgreSQL): the declared tables it compares the live ones with are made as
temporary tables; without TEMPORARY either, the plan says what it could not list."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from projections.shadow_plan import UNLISTED
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

HAND_MADE = [
    "the swap carries: index by_tenant on last_deposit",
    "the swap carries: constraint small on last_deposit: CHECK ((amount < 100000))",
    "the swap carries: default 'none'::text on column last_deposit.tenant",
]


def _privileges(pg: Pipeline, role: str) -> list[tuple[bool, ...]]:
    return query(
        pg,
        f"SELECT has_schema_privilege('{role}', 'public', 'CREATE'),"
        f" has_database_privilege('{role}', current_database(), 'CREATE'),"
        f" has_database_privilege('{role}', current_database(), 'TEMPORARY')",
    )


def test_a_dry_run_needs_no_create_privilege(
    pg: Pipeline, make_role: Callable[[str], str], tmp_path: Path
) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("CREATE INDEX by_tenant ON last_deposit (tenant)")
    pg.execute("ALTER TABLE last_deposit ALTER COLUMN tenant SET DEFAULT 'none'")
    pg.execute("ALTER TABLE last_deposit ADD CONSTRAINT small CHECK (amount < 100000)")
    reader = read_only_role(pg, make_role)
    assert _privileges(pg, reader) == [(False, False, True)]  # TEMPORARY: PUBLIC's default
    as_owner = pipeline_config(tmp_path, pg)
    as_reader = reader_config(tmp_path, pg, reader)
    tables = pg.tables()
    dry_run = ["replay", "last_deposit", "--dry-run", "--config"]

    expected = run_cli([*dry_run, str(as_owner)])
    dry = run_cli([*dry_run, str(as_reader)])

    assert expected.exit_code == 0, expected.output
    for line in HAND_MADE:
        assert line in plan_lines(expected.stdout), (line, expected.stdout)
    assert dry.exit_code == 0, dry.output
    refused = (  # a replay by this role, not its dry run
        f"warning: the rebuild will be refused: last_deposit is owned by postgres, whom the "
        f"replay's role {reader} cannot make the rebuilt table's owner"
    )
    assert refused in " ".join(plan_lines(dry.stdout))
    assert plan_text(dry.stdout) == plan_text(expected.stdout)

    database = sa.make_url(pg.store_url).database
    pg.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
    assert _privileges(pg, reader) == [(False, False, False)]
    bare = run_cli([*dry_run, str(as_reader)])

    assert bare.exit_code == 0, bare.output
    lines = plan_lines(expected.stdout)
    at = min(lines.index(line) for line in HAND_MADE)  # the first lines of what it carries
    unlisted = [line for line in lines if line not in HAND_MADE]
    unlisted.insert(at, f"the swap carries: {UNLISTED}")
    assert plan_text(bare.stdout) == " ".join(unlisted)
    assert pg.tables() == tables
