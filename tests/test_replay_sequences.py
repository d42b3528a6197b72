"""``readmodel replay --dry-run`` of a projection whose table declares a standalone
``sa.Sequence`` that does not exist yet (PostgreSQL): the dry run leaves no sequence, in
the tables' schema or anywhere, for the owner, and a role that may only read gets the
owner's plan instead of failing to create it; a sequence two tables declare, or one in a
schema of its own that a server default names, alike. The rebuild makes them for real."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from config import Settings
from projections.replay_types import ReplayOptions
from projections.shadow import ShadowTables
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
from tests.replay_sequence_fixtures import (
    SEQUENCE_SCHEMA,
    elsewhere,
    numbered,
    shared_first,
    shared_second,
)

SEQUENCE = "numbered_ticket_seq"
DRY_RUN = ["replay", "numbered", "--dry-run", "--config"]
DROPPED = (  # the sequences the projections declare, dropped as if just declared
    "DROP SEQUENCE numbered_ticket_seq",
    "DROP SEQUENCE shared_ticket_seq",
    f"DROP SEQUENCE {SEQUENCE_SCHEMA}.elsewhere_ticket_seq CASCADE",  # and elsewhere's default
)
_OBJECTS = (
    "SELECT n.nspname, c.relname, c.relkind FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
    "AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast_temp%%'"
)
_TEMPORARY = "SELECT relname FROM pg_class WHERE relpersistence = 't'"


@pytest.fixture
def pg(
    make_settings: Callable[..., Settings],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> Iterator[Pipeline]:
    """The projections of tests/replay_sequence_fixtures.py on PostgreSQL, fed; their
    sequences dropped since (as if the model had just declared them): ``make_role`` makes
    its roles here."""
    store = pg_database()
    with psycopg.connect(store, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {SEQUENCE_SCHEMA}")
    pipeline = Pipeline(
        make_settings, store, sqlite_database, projections=["tests.replay_sequence_fixtures"]
    )
    pipeline.feed("bank", EVENTS)
    for drop in DROPPED:
        pipeline.execute(drop)
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


@pytest.mark.parametrize("projection", ["shared", "elsewhere"])
def test_the_owner_and_a_reader_plan_alike(
    pg: Pipeline, make_role: Callable[[str], str], tmp_path: Path, projection: str
) -> None:
    """A sequence three columns of two tables declare is made once; one in a schema of its
    own, that the column's server default names, is made where the default finds it (a
    reader, who may create in neither schema, makes it a temporary one)."""
    reader = read_only_role(pg, make_role)
    before = _objects(pg)
    dry_run = ["replay", projection, "--dry-run", "--config"]

    owner = run_cli([*dry_run, str(pipeline_config(tmp_path, pg))])
    dry = run_cli([*dry_run, str(reader_config(tmp_path, pg, reader))])

    assert owner.exit_code == 0, owner.output
    assert dry.exit_code == 0, dry.output
    assert f"table {projection}" in plan_text(owner.stdout), owner.stdout
    assert plan_text(dry.stdout) == plan_text(owner.stdout)
    assert _objects(pg) == before


def test_a_rebuild_makes_the_declared_sequences_and_numbers_on(pg: Pipeline) -> None:
    """The real rebuilds make the sequences the dry runs did not, in their schemas, number
    the rebuilt rows from them and go on numbering new ones from where they stopped."""
    for projection in ("numbered", "shared", "elsewhere"):
        pg.replayer(projection).run(ReplayOptions())

    made = query(
        pg,
        "SELECT n.nspname, c.relname, c.relpersistence FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.relkind = 'S' AND c.relname LIKE '%%ticket%%' "
        "ORDER BY 2",
    )
    assert made == [
        (SEQUENCE_SCHEMA, "elsewhere_ticket_seq", "p"),
        ("public", SEQUENCE, "p"),
        ("public", "shared_ticket_seq", "p"),
    ]
    tickets = {row["account"]: row["ticket"] for row in pg.rows(numbered).values()}
    assert sorted(tickets.values()) == list(range(1, len(tickets) + 1))
    pg.feed("bank", [("account", "acct-new", "Deposited", {"amount": 5, "seq": 1})])
    assert pg.rows(numbered)["acct-new"]["ticket"] == len(tickets) + 1
    default = query(
        pg,
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
        "WHERE d.adrelid = 'elsewhere'::regclass",
    )
    assert default == [(f"nextval('{SEQUENCE_SCHEMA}.elsewhere_ticket_seq'::regclass)",)]


def test_a_readers_dry_run_leaves_no_temporary_object_in_its_session(
    pg: Pipeline, make_role: Callable[[str], str]
) -> None:
    """The temporary sequences and copies go with the savepoint: the pooled connection the
    plan was told on holds none after it, as the reader or as itself."""
    reader = read_only_role(pg, make_role)
    tables = [shared_first, shared_second, elsewhere]
    with pg.runtime.log.engine.connect() as conn:
        with conn.begin():
            conn.exec_driver_sql(f'SET LOCAL ROLE "{reader}"')
            lines = ShadowTables(tables).carried(conn)
            left = conn.exec_driver_sql(_TEMPORARY).all()
        assert left == [], lines
        assert conn.exec_driver_sql(_TEMPORARY).all() == []
