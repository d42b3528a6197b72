"""A blue/green rebuild carries what the database holds on a live table beside the declared
model: row-level security and its policies, column grants, indexes and triggers made by
hand, comments (PostgreSQL); hand-made indexes and triggers (SQLite). Replays stay invisible
to readers: a tenant still sees only its rows, a reader keeps its columns, a hand-made
index is there under its name, a trigger still fires."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from outbox.errors import StoreError
from projections.replay import ReplayHooks, ReplayOptions
from tests.replay_fixtures import last_deposit
from tests.replay_helpers import (
    EVENTS,
    Pipeline,
    as_role,
    deposits,
    last_seqs,
    orders,
    query,
    replay_twice,
)


@pytest.fixture(params=["postgresql", "sqlite"])
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pipeline(make_pipeline: Callable[[str], Pipeline], engine_name: str) -> Pipeline:
    return make_pipeline(engine_name)


_SECURITY = """
SELECT c.relrowsecurity, c.relforcerowsecurity, p.policyname, p.permissive, p.roles::text,
       p.cmd, p.qual, p.with_check
  FROM pg_class c LEFT JOIN pg_policies p ON p.tablename = c.relname
 WHERE c.oid = 'last_deposit'::regclass ORDER BY p.policyname
"""


def test_row_level_security_and_its_policies_are_kept(
    pg: Pipeline, make_role: Callable[[str], str]
) -> None:
    pg.feed("bank", EVENTS)
    tenant = make_role("tenant")
    pg.execute("CREATE TABLE tenant_accounts (member text, account text)")
    pg.execute(f"INSERT INTO tenant_accounts VALUES ('{tenant}', 'acct-1'), ('{tenant}', 'acct-4')")
    pg.execute(f'GRANT SELECT ON last_deposit, tenant_accounts TO "{tenant}"')
    pg.execute("ALTER TABLE last_deposit ENABLE ROW LEVEL SECURITY")
    pg.execute("ALTER TABLE last_deposit FORCE ROW LEVEL SECURITY")
    pg.execute(
        f'CREATE POLICY own_accounts ON last_deposit FOR SELECT TO "{tenant}" USING '
        f"(account IN (SELECT account FROM tenant_accounts WHERE member = current_user))"
    )
    pg.execute(
        "CREATE POLICY sane_amounts ON last_deposit AS RESTRICTIVE FOR ALL TO PUBLIC "
        "USING (amount > -1) WITH CHECK (amount > -1)"
    )
    # Names the projection's own table: made on the new one, or the old one could not be
    # dropped (never evaluated: the test's superuser bypasses row-level security).
    pg.execute(
        "CREATE POLICY writer ON last_deposit FOR ALL TO CURRENT_USER "
        "USING (seq <= (SELECT max(d.seq) FROM last_deposit d))"
    )
    before = query(pg, _SECURITY)
    seen = "SELECT account FROM last_deposit ORDER BY 1"
    assert as_role(pg, tenant, seen) == [("acct-1",), ("acct-4",)]
    assert before[0][:2] == (True, True) and len(before) == 3

    replay_twice(pg)
    pg.feed("bank", deposits(40, 7, seed=12, start=last_seqs(EVENTS)))

    assert query(pg, _SECURITY) == before
    assert as_role(pg, tenant, seen) == [("acct-1",), ("acct-4",)]
    assert len(pg.rows(last_deposit)) == 7


_COLUMN_GRANTS = """
SELECT grantee, column_name, privilege_type, is_grantable FROM information_schema.column_privileges
 WHERE table_name = 'last_deposit' AND starts_with(grantee, 'rm_test_') ORDER BY 1, 2, 3
"""


def test_column_grants_are_kept(pg: Pipeline, make_role: Callable[[str], str]) -> None:
    pg.feed("bank", EVENTS)
    reader, editor = make_role("reader"), make_role("editor")
    pg.execute(f'GRANT SELECT (account, amount) ON last_deposit TO "{reader}"')
    pg.execute(f'GRANT UPDATE (tenant) ON last_deposit TO "{editor}" WITH GRANT OPTION')
    before = query(pg, _COLUMN_GRANTS)
    assert len(before) == 3

    replay_twice(pg)

    assert query(pg, _COLUMN_GRANTS) == before
    rows = as_role(pg, reader, "SELECT account, amount FROM last_deposit")
    assert dict(rows) == {k: r["amount"] for k, r in pg.rows(last_deposit).items()}
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        as_role(pg, reader, "SELECT ref FROM last_deposit")


_INDEXES = {
    "postgresql": "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'last_deposit'",
    "sqlite": "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
    "AND tbl_name = 'last_deposit' AND sql IS NOT NULL",
}
LONG_INDEX = f"last_deposit_by_tenant_{'x' * 38}"  # 61 bytes: its shadow name is hashed


class MadeBeforeTheSwap(ReplayHooks):
    """Notes the shadow's indexes once filled (PostgreSQL builds hand-made ones then), and
    makes one more by hand on the live table, which only the swap can carry."""

    def __init__(self, pipeline: Pipeline, engine_name: str) -> None:
        self.pipeline = pipeline
        self.engine_name = engine_name
        self.shadow_indexes: list[str] = []

    def before_swap(self) -> None:
        if self.engine_name == "postgresql":
            self.shadow_indexes = sorted(
                name
                for (name,) in query(
                    self.pipeline,
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'last_deposit__rebuild'",
                )
            )
        self.pipeline.execute("CREATE INDEX late_index ON last_deposit (seq, amount)")


def test_hand_made_indexes_are_built_on_the_shadow_and_keep_their_names(
    pipeline: Pipeline, engine_name: str
) -> None:
    pipeline.feed("bank", EVENTS)
    pipeline.execute("CREATE INDEX tenant_amounts ON last_deposit (tenant, amount DESC)")
    pipeline.execute(f'CREATE UNIQUE INDEX "{LONG_INDEX}" ON last_deposit (ref) WHERE seq > 1')
    if engine_name == "postgresql":  # carried as a constraint (tests/test_replay_constraints)
        pipeline.execute("ALTER TABLE last_deposit ADD CONSTRAINT ref_seq UNIQUE (ref, seq)")
    hooks = MadeBeforeTheSwap(pipeline, engine_name)

    pipeline.replayer("last_deposit", hooks=hooks, batch=50).run(ReplayOptions())
    after_first = sorted(query(pipeline, _INDEXES[engine_name]))
    replay_twice(pipeline)

    names = [name for name, _ in after_first]
    assert {"tenant_amounts", LONG_INDEX, "late_index", "last_deposit_amount_idx"} <= set(names)
    assert ("ref_seq" in names) == (engine_name == "postgresql")
    assert sorted(query(pipeline, _INDEXES[engine_name])) == after_first
    if engine_name == "postgresql":
        assert "tenant_amounts__rebuild" in hooks.shadow_indexes  # built before the swap
        assert len(hooks.shadow_indexes) == len(after_first) - 1  # all but the late one
        definitions = dict(after_first)
        assert definitions["tenant_amounts"].endswith("(tenant, amount DESC)")
        assert "WHERE (seq > 1)" in definitions[LONG_INDEX]
        old = query(pipeline, "SELECT relname FROM pg_class WHERE starts_with(relname, 'rm_old_')")
        assert old == []


def test_a_hand_made_index_that_cannot_be_built_stops_the_replay(
    pipeline: Pipeline, engine_name: str
) -> None:
    pipeline.feed(
        "bank",
        [("account", a, "Deposited", {"amount": 100, "seq": 1}) for a in ("a", "b")],
    )
    pipeline.execute("UPDATE last_deposit SET amount = 101 WHERE account = 'b'")
    pipeline.execute("CREATE UNIQUE INDEX amount_once ON last_deposit (amount)")
    before = (pipeline.rows(last_deposit), sorted(query(pipeline, _INDEXES[engine_name])))

    with pytest.raises(StoreError, match="index amount_once, made by hand") as failure:
        pipeline.replayer("last_deposit").run(ReplayOptions())

    assert "live model is untouched" in str(failure.value)
    assert (pipeline.rows(last_deposit), sorted(query(pipeline, _INDEXES[engine_name]))) == before
    assert "last_deposit__old" not in pipeline.tables()
    pipeline.execute("DROP INDEX amount_once")
    pipeline.replayer("last_deposit").run(ReplayOptions())  # drops the failed one's shadow
    assert {r["amount"] for r in pipeline.rows(last_deposit).values()} == {100}
    assert not any(t.endswith(("__rebuild", "__old")) for t in pipeline.tables())


_TRIGGERS = {
    "postgresql": (
        "CREATE FUNCTION audit_deposit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO deposit_audit VALUES (NEW.account, NEW.amount); RETURN NEW; END $$",
        "CREATE TRIGGER audit AFTER INSERT OR UPDATE ON last_deposit "
        "FOR EACH ROW EXECUTE FUNCTION audit_deposit()",
        "CREATE TRIGGER held BEFORE DELETE ON last_deposit "
        "FOR EACH ROW EXECUTE FUNCTION audit_deposit()",
        "ALTER TABLE last_deposit DISABLE TRIGGER held",
    ),
    "sqlite": (
        "CREATE TRIGGER audit AFTER INSERT ON last_deposit BEGIN "
        "INSERT INTO deposit_audit VALUES (NEW.account, NEW.amount); END",
        "CREATE TRIGGER audit_update AFTER UPDATE ON last_deposit BEGIN "
        "INSERT INTO deposit_audit VALUES (NEW.account, NEW.amount); END",
    ),
}
_TRIGGER_LIST = {
    "postgresql": "SELECT tgname, tgenabled FROM pg_trigger "
    "WHERE tgrelid = 'last_deposit'::regclass AND NOT tgisinternal ORDER BY 1",
    "sqlite": "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY 1",
}


def test_hand_made_triggers_are_kept_and_do_not_fire_for_the_rebuild(
    pipeline: Pipeline, engine_name: str
) -> None:
    pipeline.feed("bank", EVENTS)
    pipeline.execute("CREATE TABLE deposit_audit (account text, amount bigint)")
    for statement in _TRIGGERS[engine_name]:
        pipeline.execute(statement)
    triggers = query(pipeline, _TRIGGER_LIST[engine_name])
    assert len(triggers) == 2

    replay_twice(pipeline)
    audited = query(pipeline, "SELECT count(*) FROM deposit_audit")[0][0]
    assert audited == 0  # the rebuild's own writes are not audited
    assert query(pipeline, _TRIGGER_LIST[engine_name]) == triggers
    more = deposits(40, 7, seed=13, start=last_seqs(EVENTS))
    pipeline.feed("bank", more)

    audit = query(pipeline, "SELECT account, amount FROM deposit_audit")
    assert len(audit) > 0
    rows = pipeline.rows(last_deposit)
    assert {(k, r["amount"]) for k, r in rows.items() if k in {e[1] for e in more}} <= set(audit)


_COMMENTS = """
SELECT NULL, obj_description('last_deposit'::regclass, 'pg_class')
UNION ALL SELECT attname, col_description(attrelid, attnum) FROM pg_attribute
 WHERE attrelid = 'last_deposit'::regclass AND attnum > 0 ORDER BY 1
"""


def test_comments_are_kept(pg: Pipeline) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("COMMENT ON TABLE last_deposit IS 'The latest deposit per account'")
    pg.execute("COMMENT ON COLUMN last_deposit.amount IS 'In cents; it''s never negative'")
    before = query(pg, _COMMENTS)
    assert (None, "The latest deposit per account") in before

    replay_twice(pg)

    assert query(pg, _COMMENTS) == before


def _dsn(pg: Pipeline) -> str:
    url = sa.make_url(pg.store_url)
    return f"host={url.host} port={url.port or 5432} user={url.username} dbname={url.database}"


class ConcurrentIndex(ReplayHooks):
    """An operator runs ``CREATE INDEX CONCURRENTLY`` on the live table: it is in the
    catalog, not valid yet (waiting for an older snapshot), when the swap starts, and
    completes while the swap waits for the table's lock."""

    def __init__(self, pg: Pipeline) -> None:
        self.pg = pg
        self.errors: list[BaseException] = []

    def before_swap(self) -> None:
        old = psycopg.connect(_dsn(self.pg))
        old.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        old.execute("SELECT 1")  # a snapshot CREATE INDEX CONCURRENTLY has to wait for

        def build() -> None:
            try:
                with psycopg.connect(_dsn(self.pg), autocommit=True) as conn:
                    conn.execute("CREATE INDEX CONCURRENTLY by_tenant ON last_deposit (tenant)")
            except BaseException as exc:
                self.errors.append(exc)

        def release() -> None:
            time.sleep(2.0)
            old.rollback()
            old.close()

        self.builder = threading.Thread(target=build, daemon=True)
        self.builder.start()
        time.sleep(0.7)
        threading.Thread(target=release, daemon=True).start()


def test_an_index_finished_concurrently_while_the_swap_waits_is_kept(pg: Pipeline) -> None:
    """The swap reads the live catalog once it holds the live tables' lock."""
    pg.feed("bank", EVENTS)
    hooks = ConcurrentIndex(pg)

    pg.replayer("last_deposit", hooks=hooks).run(ReplayOptions())

    hooks.builder.join(10)
    assert not hooks.builder.is_alive() and hooks.errors == []
    names = [n for (n,) in query(pg, "SELECT indexname FROM pg_indexes WHERE tablename = "
                                     "'last_deposit'")]  # fmt: skip
    assert "by_tenant" in names


class FailedConcurrently(ReplayHooks):
    def __init__(self, pg: Pipeline) -> None:
        self.pg = pg

    def before_swap(self) -> None:
        with psycopg.connect(_dsn(self.pg), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute("CREATE UNIQUE INDEX CONCURRENTLY one_row ON last_deposit ((1))")


def test_an_invalid_index_found_by_the_swap_is_named_in_a_warning(pg: Pipeline) -> None:
    pg.feed("bank", EVENTS)
    with capture_logs() as logs:
        pg.replayer("last_deposit", hooks=FailedConcurrently(pg)).run(ReplayOptions())
    warned = [entry["detail"] for entry in logs if entry["log_level"] == "warning"]
    assert len(warned) == 1 and warned[0].startswith("index one_row on last_deposit is invalid")


SQLITE_TRIGGERS = "SELECT name FROM sqlite_master WHERE type IN ('trigger', 'view') ORDER BY 1"


def test_sqlite_names_written_in_another_letter_case_are_the_table_s(
    make_pipeline: Callable[[str], Pipeline],
) -> None:
    p = make_pipeline("sqlite")
    p.feed("bank", EVENTS)
    p.execute("CREATE TABLE deposit_audit (account text, amount bigint)")
    p.execute(
        "CREATE TRIGGER audit AFTER INSERT ON Last_Deposit BEGIN "
        "INSERT INTO deposit_audit VALUES (NEW.account, NEW.amount); END"
    )
    p.execute("CREATE INDEX by_ref_amount ON LAST_DEPOSIT (ref, amount)")
    before = query(p, "SELECT type, name, sql FROM sqlite_master WHERE name IN "
                      "('audit', 'by_ref_amount') ORDER BY 1")  # fmt: skip
    assert len(before) == 2

    replay_twice(p)

    after = query(p, "SELECT type, name, sql FROM sqlite_master WHERE name IN "
                     "('audit', 'by_ref_amount') ORDER BY 1")  # fmt: skip
    assert after == before
    p.feed("bank", deposits(30, 12, seed=3, start=last_seqs(EVENTS)))  # new accounts: inserts
    assert query(p, "SELECT count(*) FROM deposit_audit")[0][0] > 0


def test_sqlite_triggers_and_views_naming_another_projection_table_are_kept(
    make_pipeline: Callable[[str], Pipeline],
) -> None:
    """Inside the projection: a trigger on one of its tables, a view, naming another one
    (SQLite checks them at each rename, when one of the tables is missing)."""
    p = make_pipeline("sqlite")
    placed, users = orders(60, seed=5)
    p.feed("auth", users)
    p.feed("orders", placed)
    p.execute("CREATE TABLE cancel_log (order_id text, email text)")
    p.execute(
        "CREATE TRIGGER log_cancel AFTER DELETE ON aux_order_lines BEGIN "
        "INSERT INTO cancel_log SELECT OLD.order_id, email FROM customer_spend "
        "WHERE customer = OLD.customer; END"
    )
    p.execute(
        "CREATE VIEW line_emails AS SELECT l.order_id, s.email FROM aux_order_lines l "
        "JOIN customer_spend s ON s.customer = l.customer"
    )
    emails = query(p, "SELECT * FROM line_emails ORDER BY 1")
    assert emails

    for _ in range(2):
        p.replayer("customer_spend").run(ReplayOptions())

    assert query(p, SQLITE_TRIGGERS) == [("line_emails",), ("log_cancel",)]
    assert query(p, "SELECT * FROM line_emails ORDER BY 1") == emails
    p.execute(f"DELETE FROM aux_order_lines WHERE order_id = '{emails[0][0]}'")
    assert query(p, "SELECT * FROM cancel_log") == [emails[0]]
    assert not any(t.endswith(("__rebuild", "__old")) for t in p.tables())


def test_sqlite_triggers_and_views_outside_the_projection_naming_it_are_kept(
    make_pipeline: Callable[[str], Pipeline],
) -> None:
    p = make_pipeline("sqlite")
    p.feed("bank", EVENTS)
    p.execute("CREATE TABLE corrections (account text, amount bigint)")
    p.execute(
        "CREATE TRIGGER correct AFTER INSERT ON corrections BEGIN "
        "UPDATE last_deposit SET amount = NEW.amount WHERE account = NEW.account; END"
    )
    p.execute("CREATE VIEW big AS SELECT account, amount FROM last_deposit WHERE amount > 500")
    big = query(p, "SELECT * FROM big ORDER BY 1")

    replay_twice(p)

    assert query(p, SQLITE_TRIGGERS) == [("big",), ("correct",)]
    assert query(p, "SELECT * FROM big ORDER BY 1") == big
    p.execute("INSERT INTO corrections VALUES ('acct-1', 4242)")
    assert p.rows(last_deposit)["acct-1"]["amount"] == 4242
