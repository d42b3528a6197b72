"""A blue/green rebuild carries the constraints added by hand on a live table (CHECK,
UNIQUE, EXCLUDE, FOREIGN KEY), the foreign keys of other tables that reference it, comments
on its indexes, triggers, policies and constraints, and its per-column settings
(PostgreSQL); rebuilt data that breaks a carried constraint stops the replay before the
swap; ``--dry-run`` lists what the swap will carry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.errors import StoreError
from projections import replay_rebuild
from projections.replay import ReplayHooks, ReplayOptions
from tests.cli_helpers import run_cli
from tests.replay_fixtures import last_deposit
from tests.replay_helpers import (
    EVENTS,
    Pipeline,
    deposits,
    last_seqs,
    orders,
    pipeline_config,
    query,
    replay_twice,
)

_CONSTRAINTS = """
SELECT conname, contype::text, pg_get_constraintdef(oid), obj_description(oid, 'pg_constraint')
  FROM pg_constraint WHERE conrelid = '{table}'::regclass ORDER BY 1
"""


def constraints(p: Pipeline, table: str = "last_deposit") -> list[Any]:
    return query(p, _CONSTRAINTS.format(table=table))


def no_leftovers(p: Pipeline) -> None:
    assert not any(t.endswith(("__rebuild", "__old")) for t in p.tables())
    assert query(p, "SELECT relname FROM pg_class WHERE starts_with(relname, 'rm_old_')") == []


class ShadowConstraints(ReplayHooks):
    """Notes the shadow's constraints once it is filled: hand-made ones are built then."""

    def __init__(self, p: Pipeline) -> None:
        self.p = p
        self.names: list[str] = []

    def before_swap(self) -> None:
        self.names = [row[0] for row in constraints(self.p, "last_deposit__rebuild")]


def test_hand_made_constraints_are_built_on_the_shadow_and_keep_their_names(pg: Pipeline) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("CREATE TABLE accounts (account text PRIMARY KEY)")
    pg.execute("INSERT INTO accounts SELECT 'acct-' || n FROM generate_series(0, 9) n")
    for statement in (
        "ADD CONSTRAINT sane_amount CHECK (amount BETWEEN 0 AND 100000)",
        "ADD CONSTRAINT ref_seq UNIQUE (ref, seq) WITH (fillfactor = 70) DEFERRABLE",
        "ADD CONSTRAINT one_per_tenant_ref EXCLUDE USING btree (tenant WITH =, ref WITH =)",
        "ADD CONSTRAINT known_account FOREIGN KEY (account) REFERENCES accounts ON DELETE CASCADE",
        "ADD CONSTRAINT not_checked CHECK (seq < 100) NOT VALID",
    ):
        pg.execute(f"ALTER TABLE last_deposit {statement}")
    pg.execute("COMMENT ON CONSTRAINT sane_amount ON last_deposit IS 'cents, at most 1000'")
    pg.execute("COMMENT ON CONSTRAINT last_deposit_pkey ON last_deposit IS 'one per account'")
    before = constraints(pg)
    index = "SELECT reloptions FROM pg_class WHERE relname = 'ref_seq'"
    assert query(pg, index) == [(["fillfactor=70"],)]
    hooks = ShadowConstraints(pg)

    pg.replayer("last_deposit", hooks=hooks).run(ReplayOptions())
    replay_twice(pg)

    assert {"sane_amount__rebuild", "ref_seq__rebuild", "known_account__rebuild"} <= set(
        hooks.names
    )
    assert constraints(pg) == before
    assert query(pg, index) == [(["fillfactor=70"],)]
    no_leftovers(pg)
    with pytest.raises(sa.exc.IntegrityError, match="sane_amount"):
        pg.execute("UPDATE last_deposit SET amount = 200000 WHERE account = 'acct-1'")
    pg.execute("DELETE FROM accounts WHERE account = 'acct-2'")  # ON DELETE CASCADE
    assert "acct-2" not in pg.rows(last_deposit)
    pg.feed("bank", deposits(40, 7, seed=12, start=last_seqs(EVENTS)))
    assert len(pg.rows(last_deposit)) == 6  # acct-2's new deposits are refused (parked)


def test_a_hand_made_foreign_key_between_the_projection_s_tables_joins_the_new_ones(
    make_pipeline: Callable[[str], Pipeline],
) -> None:
    p = make_pipeline("postgresql")
    placed, users = orders(60, seed=5)
    p.feed("auth", users)
    p.feed("orders", placed)
    p.execute(
        "ALTER TABLE aux_order_lines ADD CONSTRAINT line_customer FOREIGN KEY (customer) "
        "REFERENCES customer_spend DEFERRABLE INITIALLY DEFERRED"
    )
    before = constraints(p, "aux_order_lines")

    for _ in range(2):
        p.replayer("customer_spend").run(ReplayOptions())

    assert constraints(p, "aux_order_lines") == before
    target = "SELECT confrelid::regclass::text FROM pg_constraint WHERE conname = 'line_customer'"
    assert query(p, target) == [("customer_spend",)]
    no_leftovers(p)


_VIOLATIONS = {
    "check": ("UPDATE last_deposit SET amount = 5000", "big CHECK (amount >= 5000)"),
    "unique": (
        "UPDATE last_deposit SET amount = 101 WHERE account = 'b'",
        "big UNIQUE (amount)",
    ),
    "foreign key": (
        "CREATE TABLE accounts (account text PRIMARY KEY); INSERT INTO accounts VALUES ('a'); "
        "DELETE FROM last_deposit WHERE account = 'b'",
        "big FOREIGN KEY (account) REFERENCES accounts",
    ),
}


@pytest.mark.parametrize("kind", sorted(_VIOLATIONS))
def test_rebuilt_data_breaking_a_carried_constraint_stops_the_replay_before_the_swap(
    pg: Pipeline, kind: str
) -> None:
    pg.feed(
        "bank",
        [("account", a, "Deposited", {"amount": 100, "seq": 1}) for a in ("a", "b")],
    )
    fix, constraint = _VIOLATIONS[kind]
    pg.execute(fix)  # the live model, repaired by hand, meets the constraint; a rebuild won't
    pg.execute(f"ALTER TABLE last_deposit ADD CONSTRAINT {constraint}")
    before = (pg.rows(last_deposit), constraints(pg))

    with pytest.raises(StoreError) as failure:
        pg.replayer("last_deposit").run(ReplayOptions())

    message = str(failure.value)
    assert message.startswith("last_deposit: constraint big, made by hand") and (
        "the live model is untouched" in message
    )
    assert (pg.rows(last_deposit), constraints(pg)) == before
    assert "last_deposit__old" not in pg.tables()
    pg.execute("ALTER TABLE last_deposit DROP CONSTRAINT big")
    pg.replayer("last_deposit").run(ReplayOptions())  # drops the failed one's shadow
    assert {r["amount"] for r in pg.rows(last_deposit).values()} == {100}
    no_leftovers(pg)


_REFERENCING = """
SELECT conname, conrelid::regclass::text, confrelid::regclass::text, pg_get_constraintdef(oid),
       obj_description(oid, 'pg_constraint')
  FROM pg_constraint WHERE contype = 'f' AND conrelid = 'statements'::regclass
"""


def test_a_foreign_key_of_another_table_references_the_new_table(pg: Pipeline) -> None:
    pg.feed("bank", EVENTS)
    pg.execute(
        "CREATE TABLE statements (id serial PRIMARY KEY, "
        "account text REFERENCES last_deposit (account) ON DELETE CASCADE DEFERRABLE)"
    )
    pg.execute("INSERT INTO statements (account) VALUES ('acct-1'), ('acct-3'), ('acct-3')")
    pg.execute("COMMENT ON CONSTRAINT statements_account_fkey ON statements IS 'by account'")
    before = query(pg, _REFERENCING)
    assert before[0][2] == "last_deposit"
    replayer = pg.replayer("last_deposit")
    assert replayer.plan(ReplayOptions()).warnings == []

    replay_twice(pg)

    assert query(pg, _REFERENCING) == before
    no_leftovers(pg)
    with pytest.raises(sa.exc.IntegrityError, match="statements_account_fkey"):
        pg.execute("INSERT INTO statements (account) VALUES ('acct-99')")
    pg.execute("DELETE FROM last_deposit WHERE account = 'acct-3'")  # cascades to the new one
    assert query(pg, "SELECT account FROM statements") == [("acct-1",)]


def test_a_foreign_key_the_rebuilt_table_cannot_meet_stops_the_swap(pg: Pipeline) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("INSERT INTO last_deposit VALUES ('by-hand', 1, 1, 'by-hand#last', NULL)")
    pg.execute("CREATE TABLE statements (account text REFERENCES last_deposit (account))")
    pg.execute("INSERT INTO statements VALUES ('by-hand')")
    before = (pg.rows(last_deposit), query(pg, _REFERENCING))

    with pytest.raises(StoreError) as failure:
        pg.replayer("last_deposit").run(ReplayOptions())

    message = str(failure.value)
    assert "foreign key statements_account_fkey of statements" in message
    assert "the live model is untouched" in message
    assert (pg.rows(last_deposit), query(pg, _REFERENCING)) == before
    assert "last_deposit__old" not in pg.tables()


def test_a_referencing_table_the_replay_may_not_alter_is_refused_up_front(
    pg: Pipeline, make_role: Callable[[str], str]
) -> None:
    pg.feed("bank", EVENTS)
    owner, replay = make_role("owner"), make_role("replay")
    pg.execute("CREATE TABLE statements (account text REFERENCES last_deposit (account))")
    pg.execute(f'ALTER TABLE statements OWNER TO "{owner}"')
    shadow = pg.replayer("last_deposit").shadow
    with pg.runtime.log.engine.connect() as conn, conn.begin():
        conn.exec_driver_sql(f'SET LOCAL ROLE "{replay}"')
        refused = shadow.refusals(conn)
        conn.exec_driver_sql("RESET ROLE")
        superuser = shadow.refusals(conn)
    assert superuser == []
    mine = [r for r in refused if r.startswith("statements has a foreign key")]
    assert len(mine) == 1 and f"may not alter statements (it is {owner}'s)" in mine[0]


_DETAIL_COMMENTS = """
SELECT 'index ' || c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c
 WHERE c.relname IN ('tenant_amounts', 'last_deposit_amount_idx')
UNION ALL SELECT 'trigger ' || tgname, obj_description(oid, 'pg_trigger') FROM pg_trigger
 WHERE tgrelid = 'last_deposit'::regclass AND NOT tgisinternal
UNION ALL SELECT 'policy ' || polname, obj_description(oid, 'pg_policy') FROM pg_policy
 WHERE polrelid = 'last_deposit'::regclass
ORDER BY 1
"""

_COLUMN_SETTINGS = """
SELECT attname, attstattarget, attstorage::text, attcompression::text,
       array(SELECT o FROM unnest(attoptions) o WHERE starts_with(o, 'n_distinct') ORDER BY 1)
  FROM pg_attribute WHERE attrelid = 'last_deposit'::regclass AND attnum > 0 ORDER BY attnum
"""


def test_comments_on_indexes_triggers_policies_and_column_settings_are_kept(
    pg: Pipeline,
) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("CREATE INDEX tenant_amounts ON last_deposit (tenant, amount)")
    pg.execute(
        "CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$"
    )
    pg.execute(
        "CREATE TRIGGER touch BEFORE UPDATE ON last_deposit FOR EACH ROW EXECUTE FUNCTION noop()"
    )
    pg.execute("CREATE POLICY everyone ON last_deposit USING (true)")
    for target, text in (
        ("INDEX tenant_amounts", "for the tenant report"),
        ("INDEX last_deposit_amount_idx", "declared, commented by hand"),
        ("TRIGGER touch ON last_deposit", "does nothing"),
        ("POLICY everyone ON last_deposit", "all rows"),
    ):
        pg.execute(f"COMMENT ON {target} IS '{text}'")
    for setting in (
        "amount SET STATISTICS 500",
        "ref SET STORAGE MAIN",
        "ref SET COMPRESSION lz4",
        "account SET (n_distinct = -1)",
        "tenant SET (n_distinct = 12, n_distinct_inherited = 3)",
    ):
        pg.execute(f"ALTER TABLE last_deposit ALTER COLUMN {setting}")
    comments, settings = query(pg, _DETAIL_COMMENTS), query(pg, _COLUMN_SETTINGS)
    assert len(comments) == 4 and all(text for _, text in comments)

    replay_twice(pg)

    assert query(pg, _DETAIL_COMMENTS) == comments
    assert query(pg, _COLUMN_SETTINGS) == settings


# -- what --dry-run lists --------------------------------------------------------------


def test_the_plan_lists_what_the_swap_will_carry(pg: Pipeline) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("CREATE INDEX tenant_amounts ON last_deposit (tenant, amount)")
    pg.execute("ALTER TABLE last_deposit ADD CONSTRAINT sane_amount CHECK (amount >= 0)")
    pg.execute("CREATE TABLE statements (account text REFERENCES last_deposit (account))")
    pg.execute("CREATE VIEW big AS SELECT * FROM last_deposit WHERE amount > 500")
    pg.execute("CREATE POLICY everyone ON last_deposit USING (true)")
    pg.execute("ALTER TABLE last_deposit ENABLE ROW LEVEL SECURITY")
    pg.execute("ALTER TABLE last_deposit ALTER COLUMN amount SET STATISTICS 500")
    pg.execute("COMMENT ON COLUMN last_deposit.amount IS 'cents'")
    pg.execute("GRANT SELECT ON last_deposit TO PUBLIC")
    tables = pg.tables()

    carried = pg.replayer("last_deposit").plan(ReplayOptions()).carried

    assert tables == pg.tables()  # nothing made, nothing left
    expected = [
        "index tenant_amounts on last_deposit",
        "constraint sane_amount on last_deposit: CHECK ((amount >= 0))",
        "foreign key statements_account_fkey of statements, to last_deposit",
        "view big",
        "policy everyone on last_deposit",
        "row-level security on last_deposit: ENABLE, NO FORCE",
        "statistics 500 of last_deposit.amount",
        "comment on column last_deposit.amount",
        "grant SELECT on last_deposit to PUBLIC",
    ]
    for line in expected:
        assert line in carried, (line, carried)
    assert not any("last_deposit_amount_idx" in line for line in carried)  # declared
    assert not any("last_deposit_pkey" in line for line in carried)


def test_the_plan_lists_sqlite_s_hand_made_indexes_triggers_and_views(
    make_pipeline: Callable[[str], Pipeline],
) -> None:
    p = make_pipeline("sqlite")
    p.feed("bank", EVENTS)
    p.execute("CREATE INDEX tenant_amounts ON last_deposit (tenant, amount)")
    p.execute("CREATE VIEW big AS SELECT * FROM last_deposit WHERE amount > 500")
    p.execute(
        "CREATE TRIGGER never AFTER DELETE ON last_deposit BEGIN SELECT RAISE(ABORT, 'no'); END"
    )

    carried = p.replayer("last_deposit").plan(ReplayOptions()).carried

    assert carried == [
        "index tenant_amounts on last_deposit",
        "trigger never on last_deposit",
        "view big",
    ]


def test_cli_dry_run_prints_what_the_swap_will_carry(pg: Pipeline, tmp_path: Path) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("CREATE INDEX tenant_amounts ON last_deposit (tenant, amount)")
    pg.execute("CREATE TABLE statements (account text REFERENCES last_deposit (account))")

    dry = run_cli(
        ["replay", "last_deposit", "--dry-run", "--config", str(pipeline_config(tmp_path, pg))]
    )

    assert dry.exit_code == 0, dry.output
    lines = [line.strip() for line in dry.stdout.splitlines()]
    assert "the swap carries: index tenant_amounts on last_deposit" in lines
    assert (
        "the swap carries: foreign key statements_account_fkey of statements, to last_deposit"
        in lines
    )
    assert not any("refused" in line for line in lines)


def _made_by_hand_everywhere(p: Pipeline) -> None:
    p.feed("bank", EVENTS)
    p.execute("CREATE TABLE accounts (account text PRIMARY KEY)")
    p.execute("INSERT INTO accounts SELECT 'acct-' || n FROM generate_series(0, 9) n")
    for statement in (
        "ALTER TABLE last_deposit ADD CONSTRAINT known FOREIGN KEY (account) REFERENCES accounts",
        "ALTER TABLE last_deposit ADD CONSTRAINT sane_amount CHECK (amount > -3)",
        "ALTER TABLE last_deposit ADD CONSTRAINT acct_seq UNIQUE (account, seq)",
        "ALTER TABLE last_deposit ALTER COLUMN tenant SET DEFAULT 'none'",
        "CREATE INDEX tenant_amounts ON last_deposit (tenant, amount)",
        "CREATE TABLE st (account text, seq int, "
        "FOREIGN KEY (account, seq) REFERENCES last_deposit (account, seq))",
    ):
        p.execute(statement)


def _shadow_catalog(p: Pipeline) -> list[Any]:
    return query(
        p,
        "SELECT c.relname, n.conname FROM pg_class c LEFT JOIN pg_constraint n "
        "ON n.conrelid = c.oid WHERE starts_with(c.relname, 'last_deposit') ORDER BY 1, 2",
    )


class _StopBeforeSwap(ReplayHooks):
    def before_swap(self) -> None:
        raise RuntimeError("stopped before the swap")


def test_the_plan_lists_what_a_shadow_left_by_a_killed_replay_also_holds(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    _made_by_hand_everywhere(pg)
    expected = sorted(pg.replayer("last_deposit").plan(ReplayOptions()).carried)
    assert "constraint acct_seq on last_deposit: UNIQUE (account, seq)" in expected, expected
    # As a killed replay would leave it, its outside key too: nothing ran on the way out.
    monkeypatch.setattr(replay_rebuild, "pg_drop_outside_keys_or_warn", lambda *a, **k: None)
    with pytest.raises(RuntimeError, match="stopped before the swap"):
        pg.replayer("last_deposit", hooks=_StopBeforeSwap()).run(ReplayOptions())
    left = (pg.tables(), _shadow_catalog(pg))
    assert ("last_deposit__rebuild", "acct_seq__rebuild") in left[1]

    carried = pg.replayer("last_deposit").plan(ReplayOptions()).carried

    assert sorted(carried) == expected
    assert (pg.tables(), _shadow_catalog(pg)) == left  # the leftover is as it was
    assert pg.replayer("last_deposit").cleanup() == ["last_deposit__rebuild"]


def test_the_plan_lists_what_a_rebuild_in_progress_carries_and_leaves_it_be(
    pg: Pipeline,
) -> None:
    _made_by_hand_everywhere(pg)
    expected = sorted(pg.replayer("last_deposit").plan(ReplayOptions()).carried)
    before = (constraints(pg), constraints(pg, "st"), query(pg, _NULLS_AND_DEFAULTS))

    class DryRunMeanwhile(ReplayHooks):
        def before_swap(self) -> None:  # the shadow is filled and carries it all
            self.shadow = _shadow_catalog(pg)
            self.carried = pg.replayer("last_deposit").plan(ReplayOptions()).carried
            self.after = _shadow_catalog(pg)

    hooks = DryRunMeanwhile()
    pg.replayer("last_deposit", hooks=hooks).run(ReplayOptions())

    assert sorted(hooks.carried) == expected
    assert hooks.after == hooks.shadow
    assert (constraints(pg), constraints(pg, "st"), query(pg, _NULLS_AND_DEFAULTS)) == before
    no_leftovers(pg)
    assert not any("dry" in t for t in pg.tables())


_NULLS_AND_DEFAULTS = """
SELECT a.attname, a.attnotnull, pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = 'last_deposit'::regclass AND a.attnum > 0 ORDER BY a.attnum
"""


def test_a_default_set_by_hand_is_carried(pg: Pipeline) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("ALTER TABLE last_deposit ALTER COLUMN tenant SET DEFAULT 'none'")
    before = query(pg, _NULLS_AND_DEFAULTS)

    carried = pg.replayer("last_deposit").plan(ReplayOptions()).carried
    replay_twice(pg)

    assert query(pg, _NULLS_AND_DEFAULTS) == before
    assert "default 'none'::text on column last_deposit.tenant" in carried, carried
    assert not any("on column last_deposit.ref" in line for line in carried)  # declared


def test_a_not_null_set_by_hand_the_rebuilt_rows_break_stops_the_replay(pg: Pipeline) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("UPDATE last_deposit SET tenant = 'by-hand'")
    pg.execute("ALTER TABLE last_deposit ALTER COLUMN tenant SET NOT NULL")
    before = query(pg, _NULLS_AND_DEFAULTS)
    carried = pg.replayer("last_deposit").plan(ReplayOptions()).carried
    assert "NOT NULL on column last_deposit.tenant" in carried, carried

    with pytest.raises(StoreError) as failure:
        pg.replayer("last_deposit").run(ReplayOptions())

    message = str(failure.value)
    assert message.startswith("last_deposit: NOT NULL on column last_deposit.tenant, made by hand")
    assert "the live model is untouched" in message
    assert query(pg, _NULLS_AND_DEFAULTS) == before


def test_what_is_made_by_hand_while_the_rebuild_runs_is_carried_by_the_swap(
    pg: Pipeline,
) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("CREATE TABLE statements (account text)")

    class MadeMeanwhile(ReplayHooks):
        def before_swap(self) -> None:  # after the shadow was filled and carried
            for statement in (
                "ALTER TABLE last_deposit ADD CONSTRAINT late_check CHECK (seq > -9)",
                "ALTER TABLE last_deposit ADD CONSTRAINT late_unique UNIQUE (account, seq)",
                "ALTER TABLE statements ADD CONSTRAINT late_key FOREIGN KEY (account) "
                "REFERENCES last_deposit (account)",
                "ALTER TABLE last_deposit ALTER COLUMN amount SET STATISTICS 321",
                "ALTER TABLE last_deposit ALTER COLUMN account SET (n_distinct = 7)",
            ):
                pg.execute(statement)
            self.before = (constraints(pg), constraints(pg, "statements"))
            self.settings = query(pg, _COLUMN_SETTINGS)

    hooks = MadeMeanwhile()
    pg.replayer("last_deposit", hooks=hooks).run(ReplayOptions())

    assert (constraints(pg), constraints(pg, "statements")) == hooks.before
    assert query(pg, _COLUMN_SETTINGS) == hooks.settings
    no_leftovers(pg)
