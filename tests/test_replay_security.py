"""A blue/green rebuild never opens the projection wider than the live tables are (PostgreSQL):
views keep their security options, the shadow is readable by no one but the replay while
it is built (or left behind), the new tables get exactly the live privileges, owner,
storage options, replica identity and publications, and what the rebuild cannot carry
(an object outside the projection depending on a live table) is refused before it starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from outbox.errors import StoreError
from projections.api import Event, Projection, Tx, on
from projections.replay import Replayer, ReplayHooks, ReplayOptions
from tests.projection_fixtures import engine_on, log_events
from tests.replay_helpers import EVENTS, Pipeline, as_role, query, replay_twice

SEEN = "SELECT account FROM last_deposit ORDER BY 1"
OWN = [("acct-1",), ("acct-4",)]


def _tenant_rls(pg: Pipeline, tenant: str) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("ALTER TABLE last_deposit ENABLE ROW LEVEL SECURITY")
    pg.execute("ALTER TABLE last_deposit FORCE ROW LEVEL SECURITY")
    pg.execute(
        f'CREATE POLICY own ON last_deposit FOR SELECT TO "{tenant}" '
        "USING (account IN ('acct-1', 'acct-4'))"
    )


def test_views_keep_their_security_options(pg: Pipeline, make_role: Callable[[str], str]) -> None:
    """A security_invoker view over a table with row-level security shows a tenant its
    rows only; redefined without its options it would run as its owner: every row."""
    tenant = make_role("tenant")
    _tenant_rls(pg, tenant)
    pg.execute(
        "CREATE VIEW my_deposits WITH (security_invoker = true, security_barrier = true, "
        "check_option = local) AS SELECT account, amount FROM last_deposit"
    )
    pg.execute("CREATE VIEW plain_deposits AS SELECT account FROM last_deposit")
    pg.execute(f'GRANT SELECT ON last_deposit, my_deposits TO "{tenant}"')
    options = (
        "SELECT relname, reloptions FROM pg_class "
        "WHERE relname IN ('my_deposits', 'plain_deposits') ORDER BY 1"
    )
    before = query(pg, options)
    assert before[0][1] == ["security_invoker=true", "security_barrier=true", "check_option=local"]
    assert before[1][1] is None

    replay_twice(pg)

    assert query(pg, options) == before
    assert as_role(pg, tenant, "SELECT account FROM my_deposits ORDER BY 1") == OWN


class Probe(ReplayHooks):
    """Before the swap (the shadow filled, not live yet): what ``tenant`` can read of it."""

    def __init__(self, pg: Pipeline, tenant: str) -> None:
        self.pg, self.tenant = pg, tenant
        self.seen: list[Any] = []

    def before_swap(self) -> None:
        self.seen.append(_shadow_as(self.pg, self.tenant))
        self.seen.append(
            query(
                self.pg,
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
                "WHERE oid = 'last_deposit__rebuild'::regclass",
            )
        )


def _shadow_as(pg: Pipeline, role: str) -> object:
    try:
        return as_role(pg, role, "SELECT account FROM last_deposit__rebuild ORDER BY 1")
    except sa.exc.ProgrammingError as exc:
        assert isinstance(exc.orig, psycopg.errors.InsufficientPrivilege)
        return "permission denied"


def test_the_shadow_is_readable_by_no_one_but_the_replay_while_it_is_built(
    pg: Pipeline, make_role: Callable[[str], str]
) -> None:
    """Default privileges (the usual "the app reads every table") would grant a tenant the
    shadow, which has no row-level security of its own until the swap."""
    tenant = make_role("tenant")
    _tenant_rls(pg, tenant)
    pg.execute(f'ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO "{tenant}"')
    pg.execute(f'GRANT SELECT ON last_deposit TO "{tenant}"')
    hooks = Probe(pg, tenant)

    pg.replayer("last_deposit", hooks=hooks).run(ReplayOptions())

    assert hooks.seen == ["permission denied", [(True, False)]]
    assert as_role(pg, tenant, SEEN) == OWN
    flags = "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = '%s'"
    assert query(pg, flags % "last_deposit") == [(True, True)]


def test_row_level_security_off_on_the_live_table_is_off_on_the_new_one(pg: Pipeline) -> None:
    pg.feed("bank", EVENTS)
    replay_twice(pg)
    flags = "SELECT relrowsecurity FROM pg_class WHERE oid = 'last_deposit'::regclass"
    assert query(pg, flags) == [(False,)]


class Interrupt(ReplayHooks):
    def before_swap(self) -> None:
        raise KeyboardInterrupt  # stands for SIGINT/SIGKILL between the fill and the swap


def test_a_shadow_left_by_an_interrupted_rebuild_shows_no_rows(
    pg: Pipeline, make_role: Callable[[str], str]
) -> None:
    tenant = make_role("tenant")
    _tenant_rls(pg, tenant)
    pg.execute(f'ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO "{tenant}"')
    with pytest.raises(KeyboardInterrupt):
        pg.replayer("last_deposit", hooks=Interrupt()).run(ReplayOptions())

    assert "last_deposit__rebuild" in pg.tables()
    assert _shadow_as(pg, tenant) == "permission denied"
    pg.execute(f'GRANT SELECT ON last_deposit__rebuild TO "{tenant}"')  # by mistake
    assert _shadow_as(pg, tenant) == []  # row-level security on, and no policy


_ACL = """
SELECT c.relname, NULL, a.grantee::regrole::text, a.grantor::regrole::text, a.privilege_type,
       a.is_grantable
  FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a WHERE c.relname = '{table}'
UNION ALL
SELECT c.relname, t.attname, x.grantee::regrole::text, x.grantor::regrole::text,
       x.privilege_type, x.is_grantable
  FROM pg_class c JOIN pg_attribute t ON t.attrelid = c.oid
 CROSS JOIN LATERAL aclexplode(t.attacl) x WHERE c.relname = '{table}'
 ORDER BY 1, 2, 3, 4, 5
"""


def test_privileges_are_exactly_the_live_ones_and_keep_their_grantors(
    pg: Pipeline, make_role: Callable[[str], str]
) -> None:
    """What default privileges give a new table is not added to what the live one had (an
    operator revoked it there); a grant made by a role holding a grant option is made by
    that role again."""
    pg.feed("bank", EVENTS)
    other, lead, reader = make_role("other"), make_role("lead"), make_role("reader")
    pg.execute(f'ALTER DEFAULT PRIVILEGES GRANT SELECT, DELETE ON TABLES TO "{other}"')
    pg.execute(f'GRANT SELECT (account) ON last_deposit TO "{other}"')
    pg.execute(f'GRANT SELECT, UPDATE ON last_deposit TO "{lead}" WITH GRANT OPTION')
    pg.execute(f'GRANT SELECT (account, amount) ON last_deposit TO "{lead}" WITH GRANT OPTION')
    with pg.runtime.log.engine.begin() as conn:
        conn.exec_driver_sql(f'SET LOCAL ROLE "{lead}"')
        conn.exec_driver_sql(f'GRANT SELECT ON last_deposit TO "{reader}"')
        conn.exec_driver_sql(f'GRANT SELECT (amount) ON last_deposit TO "{reader}"')
    before = query(pg, _ACL.format(table="last_deposit"))
    assert not any(row[2] == other and row[1] is None for row in before)
    assert (None, reader, lead) in {(row[1], row[2], row[3]) for row in before}

    replay_twice(pg)

    assert query(pg, _ACL.format(table="last_deposit")) == before


ledger = sa.Table(
    "rm_ledger",
    sa.MetaData(),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("serial", sa.BigInteger, sa.Identity()),
)


class Ledger(Projection):
    name = "rm_ledger"
    tables = (ledger,)

    @on("shop", "Placed")
    def placed(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(ledger, {"id": event.aggregate_id})


def test_sequence_privileges_are_exactly_the_live_ones(
    pg: Pipeline, make_role: Callable[[str], str]
) -> None:
    other, writer = make_role("other"), make_role("writer")
    projection = Ledger()
    with engine_on(pg.store_url, [projection]) as (log, store, engine):
        head = log_events(log, [(f"o{n}", "Placed", {}) for n in range(4)])
        for lane in engine.lanes(projection):
            engine.process(lane, head)
        pg.execute(f'ALTER DEFAULT PRIVILEGES GRANT USAGE ON SEQUENCES TO "{other}"')
        pg.execute(f'GRANT USAGE, SELECT ON SEQUENCE rm_ledger_serial_seq TO "{writer}"')
        sequence = _ACL.format(table="rm_ledger_serial_seq")
        before = query(pg, sequence)
        assert {row[2] for row in before} == {"postgres", writer}
        for _ in range(2):
            Replayer(engine.reader, projection, store).run(ReplayOptions())
            assert query(pg, sequence) == before


# -- objects outside the projection that depend on a live table -------------------------

_OUTSIDE = {
    "policy": (
        "CREATE TABLE documents (account text, body text)",
        "ALTER TABLE documents ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY by_deposit ON documents FOR SELECT USING "
        "(account IN (SELECT d.account FROM last_deposit d WHERE d.amount > 500))",
    ),
    "function": (
        "CREATE FUNCTION big_deposits() RETURNS bigint LANGUAGE sql "
        "BEGIN ATOMIC SELECT count(*) FROM last_deposit WHERE amount > 500; END",
    ),
}
_NAMED = {
    "policy": "policy by_deposit on table documents",
    "function": "function big_deposits()",
}


@pytest.mark.parametrize("kind", sorted(_OUTSIDE))
def test_an_object_outside_the_projection_depending_on_a_live_table_is_refused(
    pg: Pipeline, kind: str
) -> None:
    """It would follow the renamed old table (a policy deciding on stale rows), which then
    could not be dropped: every later cleanup would fail."""
    pg.feed("bank", EVENTS)
    for statement in _OUTSIDE[kind]:
        pg.execute(statement)
    replayer = pg.replayer("last_deposit")

    warnings = replayer.plan(ReplayOptions()).warnings
    with pytest.raises(StoreError) as refused:
        replayer.run(ReplayOptions())

    assert len(warnings) == 1 and _NAMED[kind] in warnings[0]
    assert warnings[0].startswith("the rebuild will be refused: ")
    message = str(refused.value)
    assert _NAMED[kind] in message and "depends on last_deposit" in message
    assert "drop it (and make it again after the replay)" in message
    assert "--from-position" in message
    assert not any(t.endswith(("__rebuild", "__old")) for t in pg.tables())
    assert replayer.plan(ReplayOptions(from_position=0)).warnings == []  # in place is fine


def test_views_and_the_projection_s_own_objects_are_not_refused(pg: Pipeline) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("CREATE VIEW big AS SELECT * FROM last_deposit WHERE amount > 500")
    pg.execute("ALTER TABLE last_deposit ENABLE ROW LEVEL SECURITY")
    pg.execute(
        "CREATE POLICY others ON last_deposit USING "
        "(amount > (SELECT min(d.amount) FROM last_deposit d))"
    )
    assert pg.replayer("last_deposit").plan(ReplayOptions()).warnings == []
    replay_twice(pg)


# -- owner, storage options, replica identity, publications ------------------------------

_STATE = """
SELECT c.relreplident, c.reloptions, t.reloptions, pg_get_userbyid(c.relowner),
       array(SELECT p.pubname::text || coalesce(' ' || p.attnames::text, '')
                    || coalesce(' ' || p.rowfilter, '')
               FROM pg_publication_tables p
              WHERE p.tablename = 'last_deposit' ORDER BY 1),
       (SELECT x.relname FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
         WHERE i.indrelid = c.oid AND i.indisreplident)
  FROM pg_class c LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
 WHERE c.oid = 'last_deposit'::regclass
"""


@pytest.mark.parametrize(
    ("identity", "filtered"),  # a publication's columns and row filter cover the identity
    [
        ("FULL", "WHERE (amount > 10)"),  # a column list never does (PostgreSQL 15)
        ("USING INDEX last_deposit_ref_key", "(ref, amount) WHERE (ref <> 'x')"),
    ],
)
def test_owner_storage_options_replica_identity_and_publications_are_kept(
    pg: Pipeline, make_role: Callable[[str], str], identity: str, filtered: str
) -> None:
    owner = make_role("owner")
    pg.feed("bank", EVENTS)
    publications = ("rm_test_pub_listed", "rm_test_pub_filtered")
    pg.execute(f"CREATE PUBLICATION {publications[0]} FOR TABLE last_deposit")
    try:
        pg.execute(f"CREATE PUBLICATION {publications[1]} FOR TABLE last_deposit {filtered}")
        pg.execute(f"ALTER TABLE last_deposit REPLICA IDENTITY {identity}")
        pg.execute(
            "ALTER TABLE last_deposit SET (fillfactor = 70, autovacuum_enabled = false, "
            "toast.autovacuum_enabled = false)"
        )
        pg.execute(f'ALTER TABLE last_deposit OWNER TO "{owner}"')
        before = query(pg, _STATE)
        assert before[0][3] == owner and len(before[0][4]) == 2

        replay_twice(pg)

        assert query(pg, _STATE) == before
        pg.feed("bank", EVENTS[:20])  # the live workers write the new table
    finally:
        for publication in publications:
            pg.execute(f"DROP PUBLICATION IF EXISTS {publication}")
        pg.execute("ALTER TABLE IF EXISTS last_deposit OWNER TO CURRENT_USER")


def test_an_owner_or_publication_the_replay_cannot_set_is_refused_before_the_rebuild(
    pg: Pipeline, make_role: Callable[[str], str]
) -> None:
    """The replay's role owns the shadow; giving it the live owner takes being a member of
    that role (and the owner being allowed to create in the schema)."""
    pg.feed("bank", EVENTS)
    owner, replay, other = make_role("owner"), make_role("replay"), make_role("other")
    pg.execute(f'ALTER TABLE last_deposit OWNER TO "{owner}"')
    pg.execute(f'GRANT "{owner}" TO "{replay}"')
    pg.execute(f'GRANT CREATE ON SCHEMA public TO "{replay}"')
    publication = "rm_test_pub_foreign"
    pg.execute(f"CREATE PUBLICATION {publication} FOR TABLE last_deposit")
    try:
        pg.execute(f'ALTER PUBLICATION {publication} OWNER TO "{other}"')
        shadow = pg.replayer("last_deposit").shadow
        with pg.runtime.log.engine.connect() as conn, conn.begin():
            conn.exec_driver_sql(f'SET LOCAL ROLE "{replay}"')
            refused = shadow.refusals(conn)
            conn.exec_driver_sql("RESET ROLE")
            pg_refused = shadow.refusals(conn)  # a superuser may do all of it
        assert len(refused) == 2 and pg_refused == []
        assert f"last_deposit is owned by {owner}" in refused[0]
        assert f"{owner} may not create in the table's schema" in refused[0]
        assert f"publication {publication} lists last_deposit" in refused[1]
        assert f"it is {other}'s" in refused[1]
    finally:
        pg.execute(f"DROP PUBLICATION IF EXISTS {publication}")
        pg.execute(f'REVOKE CREATE ON SCHEMA public FROM "{replay}"')
        pg.execute("ALTER TABLE IF EXISTS last_deposit OWNER TO CURRENT_USER")
