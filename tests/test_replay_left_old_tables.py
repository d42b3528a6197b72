"""An old table whose drop after the swap is blocked (an application's open transaction
read a table its foreign key references) is left as ``<table>__old``: what the replay does
to it then must touch nothing outside the projection (its hand-made triggers do not fire,
it leaves the publications of the live table). Only tables readmodel marked as its leftovers
are dropped: a table of the user's that is merely named like one is left alone."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from outbox.errors import StoreError
from projections import replay_rebuild
from projections.replay import ReplayHooks, ReplayOptions, ReplaySummary
from tests.replay_helpers import EVENTS, Pipeline, query

_MIRROR = """
CREATE TABLE deposit_mirror (account text PRIMARY KEY, amount bigint);
INSERT INTO deposit_mirror SELECT account, amount FROM last_deposit;
CREATE FUNCTION mirror_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN TRUNCATE deposit_mirror; RETURN NULL; END $$;
CREATE TRIGGER mirror_truncate AFTER TRUNCATE ON last_deposit
  FOR EACH STATEMENT EXECUTE FUNCTION mirror_truncate();
"""


def _accounts(p: Pipeline) -> None:
    p.feed("bank", EVENTS)
    p.execute("CREATE TABLE accounts (account text PRIMARY KEY)")
    p.execute("INSERT INTO accounts SELECT 'acct-' || n FROM generate_series(0, 9) n")
    p.execute(
        "ALTER TABLE last_deposit ADD CONSTRAINT known FOREIGN KEY (account) REFERENCES accounts"
    )


def _replay_while_accounts_read(pg: Pipeline, monkeypatch: pytest.MonkeyPatch) -> ReplaySummary:
    """A replay while an application's transaction that read ``accounts`` stays open: the
    swap is done, the old table's drop gives up (short waits, for a fast test)."""
    monkeypatch.setattr(replay_rebuild, "_DROP_LOCK_TIMEOUT_MS", 200)
    monkeypatch.setattr(replay_rebuild, "_DROP_ATTEMPTS", 2)
    dsn = sa.make_url(pg.store_url).set(drivername="postgresql")
    app = psycopg.connect(dsn.render_as_string(hide_password=False))
    try:
        app.execute("SELECT count(*) FROM accounts")
        summary = pg.replayer("last_deposit").run(ReplayOptions())
    finally:
        app.rollback()
        app.close()
    assert summary.left_behind == ["last_deposit__old"], summary
    return summary


def test_emptying_a_left_old_table_fires_none_of_its_truncate_triggers(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old table keeps the live table's triggers: an AFTER TRUNCATE one that empties a
    table outside (kept in step with the live one) must not fire as the old one is emptied."""
    _accounts(pg)
    pg.execute(_MIRROR)

    summary = _replay_while_accounts_read(pg, monkeypatch)

    assert summary.left_because is not None and "emptied" in summary.left_because
    assert query(pg, "SELECT count(*) FROM last_deposit__old") == [(0,)]
    assert query(pg, "SELECT count(*) FROM deposit_mirror") == [(7,)]
    pg.execute("TRUNCATE last_deposit")  # the live table's trigger still works
    assert query(pg, "SELECT count(*) FROM deposit_mirror") == [(0,)]


_MEMBERS = "SELECT pubname, tablename FROM pg_publication_tables ORDER BY 1, 2"


def test_a_left_old_table_leaves_the_publications_that_list_the_live_table(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Still a member, its TRUNCATE would be published: a subscriber, which has no
    ``last_deposit__old``, would stop applying changes."""
    _accounts(pg)
    pg.execute("CREATE PUBLICATION deposits FOR TABLE last_deposit")

    summary = _replay_while_accounts_read(pg, monkeypatch)

    assert query(pg, _MEMBERS) == [("deposits", "last_deposit")]
    assert summary.left_because is not None and "emptied" in summary.left_because
    assert query(pg, "SELECT count(*) FROM last_deposit__old") == [(0,)]


def test_a_left_old_table_a_schema_publication_covers_is_not_emptied(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publication of every table in the schema still covers it: emptied, its rows'
    removal would be published, so it keeps them, and the summary says why."""
    _accounts(pg)
    pg.execute("CREATE PUBLICATION everything FOR TABLES IN SCHEMA public")

    summary = _replay_while_accounts_read(pg, monkeypatch)

    assert query(pg, "SELECT count(*) FROM last_deposit__old") == [(7,)]
    why = summary.left_because or ""
    assert "not emptied" in why and "everything" in why, why
    assert "refuse" in why and "accounts" in why, why


def test_a_drop_waits_longer_than_the_server_s_deadlock_timeout(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL cancels an autovacuum that blocks a lock request only once the request
    waited ``deadlock_timeout``: a drop that waited no longer would give up on every
    autovacuum of the tables it locks. Its bound is the drop's own past the server's."""
    _accounts(pg)
    pg.execute("ALTER TABLE accounts SET (autovacuum_enabled = off)")  # the test's holder only
    database = sa.make_url(pg.store_url).database
    pg.execute(f'ALTER DATABASE "{database}" SET deadlock_timeout = 1300')
    pg.replayer("last_deposit").store.writer.dispose()  # new sessions read it

    summary = _replay_while_accounts_read(pg, monkeypatch)

    assert "lock timeout after 1500 ms waiting for a lock on accounts" in (
        summary.left_because or ""
    ), summary.left_because


def test_dropping_a_left_old_table_later_waits_no_longer_than_after_the_swap(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attempt queues ACCESS EXCLUSIVE on ``accounts`` too, stalling its readers: the
    cleanup (and the next replay's) waits the short bound of the drop after the swap, not the
    longer one of a swap's locks."""
    _accounts(pg)
    _replay_while_accounts_read(pg, monkeypatch)
    deadlock = query(pg, "SELECT setting::int FROM pg_settings WHERE name = 'deadlock_timeout'")
    dsn = sa.make_url(pg.store_url).set(drivername="postgresql")
    app = psycopg.connect(dsn.render_as_string(hide_password=False))
    try:
        app.execute("SELECT count(*) FROM accounts")
        with pytest.raises(StoreError) as refused:
            pg.replayer("last_deposit").cleanup()
    finally:
        app.rollback()
        app.close()

    assert f"lock timeout after {deadlock[0][0] + 200} ms" in str(refused.value), refused.value


def test_a_replay_goes_on_while_an_old_table_left_earlier_cannot_be_dropped_yet(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap needs the ``__old`` name again: it renames the earlier one (unique by its
    oid) and drops it after, with its own old table; what it still cannot drop, a later
    replay does."""
    _accounts(pg)
    _replay_while_accounts_read(pg, monkeypatch)
    oid = query(pg, "SELECT 'last_deposit__old'::regclass::oid")[0][0]
    pg.execute("UPDATE last_deposit SET amount = 0")

    again = _replay_while_accounts_read_again(pg)

    assert sorted(again.left_behind) == ["last_deposit__old", f"last_deposit__old_{oid}"]
    assert query(pg, "SELECT count(*) FROM last_deposit WHERE amount = 0") == [(0,)]
    assert pg.replayer("last_deposit").run(ReplayOptions()).left_behind == []
    assert {t for t in pg.tables() if "__old" in t} == set()


def _replay_while_accounts_read_again(pg: Pipeline) -> ReplaySummary:
    dsn = sa.make_url(pg.store_url).set(drivername="postgresql")
    app = psycopg.connect(dsn.render_as_string(hide_password=False))
    try:
        app.execute("SELECT count(*) FROM accounts")
        return pg.replayer("last_deposit").run(ReplayOptions())
    finally:
        app.rollback()
        app.close()


_LOOKALIKES = """
CREATE TABLE last_deposit__old (note text);
INSERT INTO last_deposit__old VALUES ('mine');
CREATE TABLE last_deposit__old_7 (note text);
INSERT INTO last_deposit__old_7 VALUES ('mine too');
"""


def _lookalikes(pg: Pipeline) -> list[tuple[str, list[tuple[str]]]]:
    return [
        (name, query(pg, f"SELECT note FROM {name}"))
        for name in ("last_deposit__old", "last_deposit__old_7")
    ]


def _warned(logs: list[dict[str, object]], name: str) -> bool:
    return any(entry["log_level"] == "warning" and name in str(entry) for entry in logs)


def test_a_users_tables_named_like_leftovers_survive_a_replay_and_the_cleanup(
    pg: Pipeline,
) -> None:
    """``<table>__old`` and ``<table>__old_<n>`` of the user's (readmodel did not make them):
    ``--dry-run``'s plan, ``--cleanup`` and a replay leave them as they are, each saying so,
    and the swap still happens, its old table under a free name (dropped after)."""
    pg.feed("bank", EVENTS)
    live = query(pg, "SELECT account, amount FROM last_deposit ORDER BY 1")
    pg.execute(_LOOKALIKES)
    mine = [("last_deposit__old", [("mine",)]), ("last_deposit__old_7", [("mine too",)])]

    plan = pg.replayer("last_deposit").plan(ReplayOptions())
    assert plan.leftovers == [], plan
    assert [w for w in plan.warnings if "did not make" in w] == [
        f"{name} is named like a replay leftover but readmodel did not make it: left alone "
        f"(if it is a leftover: readmodel replay last_deposit --cleanup --drop-unmarked {name})"
        for name, _ in mine
    ]
    with capture_logs() as cleaning:
        assert pg.replayer("last_deposit").cleanup() == []
    with capture_logs() as replaying:
        summary = pg.replayer("last_deposit").run(ReplayOptions())

    assert _lookalikes(pg) == mine
    assert summary.left_behind == [], summary
    assert query(pg, "SELECT account, amount FROM last_deposit ORDER BY 1") == live
    assert {t for t in pg.tables() if "__old" in t} == {name for name, _ in mine}
    for logs in (cleaning, replaying):
        for name, _ in mine:
            assert _warned(logs, name), (name, logs)


def test_a_leftover_readmodel_made_is_dropped_beside_a_users_lookalike(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    _accounts(pg)
    _replay_while_accounts_read(pg, monkeypatch)  # leaves its own last_deposit__old
    pg.execute("CREATE TABLE last_deposit__old_7 (note text)")
    pg.execute("INSERT INTO last_deposit__old_7 VALUES ('mine too')")

    assert pg.replayer("last_deposit").cleanup() == ["last_deposit__old"]

    assert {t for t in pg.tables() if "__old" in t} == {"last_deposit__old_7"}
    assert query(pg, "SELECT note FROM last_deposit__old_7") == [("mine too",)]


def test_a_users_table_named_like_a_shadow_survives_the_cleanup_and_stops_a_rebuild(
    pg: Pipeline,
) -> None:
    """``<table>__rebuild`` of the user's (readmodel's shadows carry its mark): ``--cleanup``
    leaves it with a warning, ``--dry-run`` says the rebuild will be refused, and the replay
    is refused naming it, rather than dropping it (or building into it)."""
    pg.feed("bank", EVENTS)
    live = query(pg, "SELECT account, amount FROM last_deposit ORDER BY 1")
    pg.execute("CREATE TABLE last_deposit__rebuild (note text)")
    pg.execute("INSERT INTO last_deposit__rebuild VALUES ('mine')")

    with capture_logs() as cleaning:
        assert pg.replayer("last_deposit").cleanup() == []
    plan = pg.replayer("last_deposit").plan(ReplayOptions())
    with pytest.raises(StoreError, match="last_deposit__rebuild"):
        pg.replayer("last_deposit").run(ReplayOptions())

    assert query(pg, "SELECT note FROM last_deposit__rebuild") == [("mine",)]
    assert query(pg, "SELECT account, amount FROM last_deposit ORDER BY 1") == live
    assert _warned(cleaning, "last_deposit__rebuild"), cleaning
    assert plan.leftovers == [], plan
    assert any("refused" in w and "last_deposit__rebuild" in w for w in plan.warnings), plan


def test_a_shadow_a_replay_left_is_still_dropped_and_the_new_table_keeps_no_mark(
    pg: Pipeline,
) -> None:
    """The shadow carries readmodel's mark while it is built: one an interrupted replay left
    is dropped by ``--cleanup``; swapped in, the table has the live table's comment again."""
    pg.feed("bank", EVENTS)
    pg.execute("COMMENT ON TABLE last_deposit IS 'the users'' own note'")
    replayer = pg.replayer("last_deposit")
    with replayer.store.engine.begin() as conn:
        replayer.shadow.create(conn)  # as a replay interrupted after it made its shadow

    assert [n.strip('"') for n in pg.replayer("last_deposit").cleanup()] == [
        "last_deposit__rebuild"
    ]
    pg.replayer("last_deposit").run(ReplayOptions())

    comment = "SELECT obj_description('last_deposit'::regclass, 'pg_class')"
    assert query(pg, comment) == [("the users' own note",)]
    assert {t for t in pg.tables() if t.endswith(("__rebuild", "__old"))} == set()


def test_a_shadow_an_older_readmodel_left_unmarked_is_dropped_only_when_named(
    pg: Pipeline,
) -> None:
    """A replay of a readmodel from before the marks, interrupted, left an unmarked shadow
    and its rebuild checkpoints: a user's table of that name could have the same (a shadow
    dropped by hand), so it is left alone and the rebuild refused, saying what to do;
    ``cleanup`` drops it when the operator names it, and the rebuild goes on."""
    pg.feed("bank", EVENTS)
    replayer = pg.replayer("last_deposit")
    with replayer.store.engine.begin() as conn:
        replayer.shadow.create(conn)
        replayer._init_shadow_checkpoints(conn, ["bank"])  # as a rebuild under way
        conn.exec_driver_sql("COMMENT ON TABLE last_deposit__rebuild IS NULL")  # no mark yet
    live = query(pg, "SELECT account, amount FROM last_deposit ORDER BY 1")

    plan = pg.replayer("last_deposit").plan(ReplayOptions())
    assert pg.replayer("last_deposit").cleanup() == []
    with pytest.raises(StoreError, match="--cleanup --drop-unmarked last_deposit__rebuild"):
        pg.replayer("last_deposit").run(ReplayOptions())
    assert "last_deposit__rebuild" in pg.tables()
    assert plan.leftovers == [], plan
    assert any("refused" in w and "--drop-unmarked" in w for w in plan.warnings), plan

    dropped = pg.replayer("last_deposit").cleanup(["last_deposit__rebuild"])
    pg.replayer("last_deposit").run(ReplayOptions())

    assert [n.strip('"') for n in dropped] == ["last_deposit__rebuild"]
    assert query(pg, "SELECT account, amount FROM last_deposit ORDER BY 1") == live
    assert {t for t in pg.tables() if t.endswith(("__rebuild", "__old"))} == set()


class _HoldShadow(ReplayHooks):
    """Before the swap, an application's transaction reads the shadow (one checking the
    rebuild's progress): the swap's rename of it waits, gives up and the swap is retried."""

    def __init__(self, holder: psycopg.Connection) -> None:
        self.holder = holder

    def before_swap(self) -> None:
        self.holder.execute("SELECT count(*) FROM last_deposit__rebuild")


def test_a_users_lookalike_is_warned_of_once_per_replay_however_often_the_swap_retries(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan, the cleanup and each attempt of the swap find the user's ``<table>__old``:
    one replay says so once."""
    pg.feed("bank", EVENTS)
    pg.execute(_LOOKALIKES)
    monkeypatch.setattr(replay_rebuild, "_SWAP_LOCK_TIMEOUT_MS", 200)
    dsn = sa.make_url(pg.store_url).set(drivername="postgresql")
    holder = psycopg.connect(dsn.render_as_string(hide_password=False))
    with capture_logs() as logs:

        def release_after_a_retry() -> None:  # the next attempt swaps
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if any(entry["event"] == "replay swap retried" for entry in list(logs)):
                    break
                time.sleep(0.01)
            holder.rollback()

        releaser = threading.Thread(target=release_after_a_retry)
        try:
            releaser.start()
            summary = pg.replayer("last_deposit", hooks=_HoldShadow(holder)).run(ReplayOptions())
        finally:
            releaser.join()
            holder.close()

    assert summary.left_behind == [], summary
    assert [e for e in logs if e["event"] == "replay swap retried"] != [], logs
    warnings = [e for e in logs if e["log_level"] == "warning" and "last_deposit__old" in str(e)]
    assert len(warnings) == 1, warnings
    assert _lookalikes(pg) == [
        ("last_deposit__old", [("mine",)]),
        ("last_deposit__old_7", [("mine too",)]),
    ]


def test_each_replay_of_one_replayer_warns_of_a_users_lookalike_once(pg: Pipeline) -> None:
    """A replayer run twice in one process warns at each replay; a plan read just before its
    replay (as ``readmodel replay`` does) and that replay warn once between them."""
    pg.feed("bank", EVENTS)
    pg.execute(_LOOKALIKES)
    replayer = pg.replayer("last_deposit")
    runs = []
    for _ in range(2):
        with capture_logs() as logs:
            replayer.run(ReplayOptions())
        runs.append(logs)
    with capture_logs() as planned_then_run:
        replayer.plan(ReplayOptions())
        replayer.run(ReplayOptions())

    for logs in [*runs, planned_then_run]:
        warnings = [e for e in logs if e["log_level"] == "warning" and "__old" in str(e)]
        assert len(warnings) == 1, (warnings, logs)
        assert warnings[0]["tables"] == ["last_deposit__old", "last_deposit__old_7"]
