"""``readmodel replay`` of a projection whose PostgreSQL tables (and a schema) have names
with ``%`` (``%s`` too), a double quote and capitals: such a name is statement text in some
queries and a parameter (``::regclass``) in others, and must name the same table in both."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import Settings
from projections.replay_types import ReplayHooks, ReplayOptions
from tests.cli_helpers import run_cli
from tests.replay_helpers import (
    Pipeline,
    deposits,
    pipeline_config,
    plan_lines,
    plan_text,
    query,
    reader_config,
)
from tests.replay_name_fixtures import ODD_SCHEMA, TABLES, accounts, sales, schema_sales

NAMES = ["tests.replay_name_fixtures"]
SCHEMAS = ("public", ODD_SCHEMA)
# Statement text sent without parameters still goes through psycopg's formatting here.
SALES = '"sales%%2024"'
SCHEMA_SALES = '"shop%%s 2024"."Orders%%2024"'


@pytest.fixture
def odd_pipelines(
    make_settings: Callable[..., Settings],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> Iterator[Callable[[], Pipeline]]:
    """Pipelines of the projection ``odd_names`` on PostgreSQL (its schema made first)."""
    made: list[Pipeline] = []

    def make() -> Pipeline:
        url = pg_database()
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            conn.exec_driver_sql('CREATE SCHEMA "shop%%s 2024"')
            accounts.create(conn)
            conn.execute(accounts.insert(), [{"account": f"acct-{n}"} for n in range(10)])
        engine.dispose()
        made.append(Pipeline(make_settings, url, sqlite_database, projections=NAMES))
        return made[-1]

    yield make
    for pipeline in made:
        pipeline.close()


class Interrupt(ReplayHooks):
    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        raise KeyboardInterrupt


def tables(p: Pipeline) -> set[tuple[str, str]]:
    rows = query(
        p,
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname IN"
        " ('public', 'shop%%s 2024')",
    )
    outside = {"rm_", accounts.name}
    return {(str(s), str(name)) for s, name in rows if not str(name).startswith(tuple(outside))}


def declared() -> set[tuple[str, str]]:
    return {(t.schema or "public", t.name) for t in TABLES}


def models(p: Pipeline) -> dict[str, dict[str, Any]]:
    return {f"{t.schema}.{t.name}": p.rows(t) for t in TABLES}


def test_replays_of_tables_named_with_percent_quotes_and_capitals(
    odd_pipelines: Callable[[], Pipeline], tmp_path: Path
) -> None:
    live, clean = odd_pipelines(), odd_pipelines()
    events = deposits(400, 9, seed=31)
    for p in (live, clean):
        p.feed("bank", events)
    assert models(live) == models(clean) and len(live.rows(sales)) == 9
    # What the swap carries, whose catalog text names the tables: it is sent as statements.
    live.execute(f"CREATE INDEX \"by%%amount\" ON {SALES} (amount) WHERE account LIKE 'acct-%%'")
    live.execute(f'CREATE VIEW "big%%s" AS SELECT account FROM {SCHEMA_SALES} WHERE amount > 10')
    live.execute(f"COMMENT ON TABLE {SCHEMA_SALES} IS '100%% rebuilt'")
    live.execute(f"UPDATE {SALES} SET amount = -1")
    live.execute(f"UPDATE {SCHEMA_SALES} SET amount = 0 WHERE account = 'acct-3'")
    assert models(live) != models(clean)

    # An interrupted rebuild leaves its shadows: --dry-run names them, --cleanup drops them.
    with pytest.raises(KeyboardInterrupt):
        live.replayer("odd_names", Interrupt(), batch=100).run(ReplayOptions())
    shadows = {(s, f"{n}__rebuild") for s, n in declared()}
    assert tables(live) == declared() | shadows
    config = str(pipeline_config(tmp_path, live))
    dry = run_cli(["replay", "odd_names", "--dry-run", "--config", config])
    assert dry.exit_code == 0, dry.output
    for line in [
        "table sales%2024 <- sales%2024__rebuild",
        'table Odd"Name%d <- Odd"Name%d__rebuild',
        'will be dropped: "sales%2024__rebuild"',
        'will be dropped: "rate%s__rebuild"',
        'will be dropped: "Odd""Name%d__rebuild"',
        'will be dropped: "shop%s 2024"."Orders%2024__rebuild"',
        'will be dropped: "shop%s 2024"."Odd""Name%s__rebuild"',
        "the swap carries: index by%amount on sales%2024",
        'the swap carries: view "big%s"',
        "the swap carries: comment on table Orders%2024",
    ]:
        assert line in " ".join(dry.stdout.split()), (line, dry.stdout)  # as wrapped
    assert "%%" not in dry.stdout
    cleanup = run_cli(["replay", "odd_names", "--cleanup", "--config", config])
    assert cleanup.exit_code == 0, cleanup.output
    assert '"shop%s 2024"."Odd""Name%s__rebuild"' in " ".join(cleanup.stdout.split())
    assert tables(live) == declared()

    # A replay drops what an interrupted one left, rebuilds, swaps and drops the old tables.
    with pytest.raises(KeyboardInterrupt):
        live.replayer("odd_names", Interrupt(), batch=100).run(ReplayOptions())
    for _ in range(2):  # twice: the first one's names are the ones the next one expects
        summary = live.replayer("odd_names").run(ReplayOptions())
        assert summary.left_behind == []
        assert models(live) == models(clean)
        assert tables(live) == declared()
    assert query(live, 'SELECT count(*) FROM "big%%s"') == [
        (sum(1 for row in clean.rows(schema_sales).values() if row["amount"] > 10),)
    ]
    assert query(live, "SELECT indexdef FROM pg_indexes WHERE indexname = 'by%%amount'") == [
        (
            'CREATE INDEX "by%amount" ON public."sales%2024" USING btree (amount)'
            " WHERE (account ~~ 'acct-%'::text)",
        )
    ]
    comment = f"SELECT obj_description('{SCHEMA_SALES}'::regclass)"
    assert query(live, comment) == [("100% rebuilt",)]

    # In place (replay-safe): the live tables again from a position.
    live.execute(f"UPDATE {SALES} SET amount = -1")
    summary = live.replayer("odd_names").run(ReplayOptions(from_position=1))
    assert summary.mode == "in-place" and models(live) == models(clean)
    assert tables(live) == declared()


def test_a_read_only_dry_run_of_tables_named_with_percent(
    odd_pipelines: Callable[[], Pipeline], tmp_path: Path
) -> None:
    """A role that may only read compares the live tables with temporary ones (those in the
    schema with a ``%`` too, their foreign key to a table outside left off them)."""
    p = odd_pipelines()
    p.feed("bank", deposits(100, 9, seed=32))
    p.execute(f'CREATE INDEX "by%%amount" ON {SALES} (amount)')
    reader = f"rm_test_reader_{uuid.uuid4().hex[:8]}"
    p.execute(f'CREATE ROLE "{reader}" LOGIN')
    try:
        for schema in ("public", '"shop%%s 2024"'):
            p.execute(f'GRANT USAGE ON SCHEMA {schema} TO "{reader}"')
            p.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO "{reader}"')
        may_create = query(
            p,
            f"SELECT has_schema_privilege('{reader}', s, 'CREATE')"
            " FROM unnest(ARRAY['public', 'shop%%s 2024']) s",
        )
        assert may_create == [(False,), (False,)]
        dry_run = ["replay", "odd_names", "--dry-run", "--config"]

        expected = run_cli([*dry_run, str(pipeline_config(tmp_path, p))])
        dry = run_cli([*dry_run, str(reader_config(tmp_path, p, reader))])
    finally:
        p.execute(f'DROP OWNED BY "{reader}"')
        p.execute(f'DROP ROLE "{reader}"')

    assert expected.exit_code == 0 and dry.exit_code == 0, (expected.output, dry.output)
    assert "the swap carries: index by%amount on sales%2024" in plan_lines(dry.stdout)
    assert "constraint" not in dry.stdout  # the declared foreign keys are no hand-made ones
    assert plan_text(dry.stdout) == plan_text(expected.stdout)
    assert tables(p) == declared()


QUOTED = '"Odd""Name%%d"'
ACCOUNTS = '"shop%%s 2024"."Accounts%%s"'


@pytest.mark.parametrize("may", ["temporary", "create"])
def test_a_read_only_dry_run_lists_foreign_keys_made_by_hand_to_a_table_outside(
    odd_pipelines: Callable[[], Pipeline], tmp_path: Path, may: str
) -> None:
    """The declared foreign key to a table outside, left off the temporary copies, stands
    for that key alone: those made by hand beside it (another action, or another name) are
    listed as the owner's plan lists it. A role that may create in the schema but not
    reference the table outside (REFERENCES) gets that plan too, not a refusal."""
    p = odd_pipelines()
    p.feed("bank", deposits(100, 9, seed=33))
    on_delete = "FOREIGN KEY (account) REFERENCES"
    p.execute(
        f"ALTER TABLE {QUOTED} ADD CONSTRAINT cascade {on_delete} {ACCOUNTS} ON DELETE CASCADE"
    )
    p.execute(f"ALTER TABLE {QUOTED} ADD CONSTRAINT twin {on_delete} {ACCOUNTS}")
    reader = f"rm_test_reader_{uuid.uuid4().hex[:8]}"
    database = sa.make_url(p.store_url).database
    p.execute(f'CREATE ROLE "{reader}" LOGIN')
    try:
        for schema in ("public", '"shop%%s 2024"'):
            p.execute(f'GRANT USAGE ON SCHEMA {schema} TO "{reader}"')
            p.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO "{reader}"')
            if may == "create":
                p.execute(f'GRANT CREATE ON SCHEMA {schema} TO "{reader}"')
        if may == "create":
            p.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
        else:
            p.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        dry_run = ["replay", "odd_names", "--dry-run", "--config"]
        expected = run_cli([*dry_run, str(pipeline_config(tmp_path, p))])
        dry = run_cli([*dry_run, str(reader_config(tmp_path, p, reader))])
    finally:
        p.execute(f'DROP OWNED BY "{reader}"')
        p.execute(f'DROP ROLE "{reader}"')

    assert expected.exit_code == 0 and dry.exit_code == 0, (expected.output, dry.output)
    for line in [
        f'the swap carries: constraint cascade on Odd"Name%d: {on_delete} '
        f'"shop%s 2024"."Accounts%s"(account) ON DELETE CASCADE',
        f'the swap carries: constraint twin on Odd"Name%d: {on_delete} '
        f'"shop%s 2024"."Accounts%s"(account)',
    ]:
        assert line in " ".join(plan_lines(expected.stdout)), (line, expected.stdout)
    assert plan_text(dry.stdout) == plan_text(expected.stdout)
    assert tables(p) == declared()
