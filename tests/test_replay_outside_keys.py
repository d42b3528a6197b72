"""A hand-made foreign key from a live table to a table outside the projection (PostgreSQL):
the rebuild adds it to the shadow under a bounded lock wait, ``NOT VALID`` then validated,
and a failed rebuild drops it from the shadow it leaves, so that the table outside is not
held up by a table nobody reads."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from outbox.errors import StoreError
from projections import replay_rebuild
from projections.replay import ReplayHooks, ReplayOptions
from tests.cli_helpers import run_cli
from tests.replay_fixtures import last_deposit
from tests.replay_helpers import EVENTS, Pipeline, pipeline_config, query, replay_twice

_KEYS = """
SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint
 WHERE conrelid = 'last_deposit'::regclass AND contype = 'f' ORDER BY 1
"""
_SHADOW_KEYS = """
SELECT conname FROM pg_constraint
 WHERE conrelid = to_regclass('last_deposit__rebuild') AND contype = 'f'
"""


def _dsn(p: Pipeline) -> str:
    url = sa.make_url(p.store_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _accounts(p: Pipeline) -> None:
    p.feed("bank", EVENTS)
    p.execute("CREATE TABLE accounts (account text PRIMARY KEY)")
    p.execute("INSERT INTO accounts SELECT 'acct-' || n FROM generate_series(0, 9) n")
    p.execute(
        "ALTER TABLE last_deposit ADD CONSTRAINT known FOREIGN KEY (account) REFERENCES accounts"
    )


class FailBeforeSwap(ReplayHooks):
    def before_swap(self) -> None:
        raise RuntimeError("stopped before the swap")


def test_a_key_to_a_table_outside_waits_a_bounded_time_for_its_lock(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    _accounts(pg)
    monkeypatch.setattr(replay_rebuild, "_SWAP_LOCK_TIMEOUT_MS", 200)
    monkeypatch.setattr(replay_rebuild, "_SWAP_ATTEMPTS", 2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pg.replayer("last_deposit").run(ReplayOptions())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    holder = psycopg.connect(_dsn(pg))
    try:
        holder.execute("INSERT INTO accounts VALUES ('held')")  # an application's open write
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(20)
        finished = not worker.is_alive()
    finally:
        holder.rollback()
        holder.close()
    worker.join()

    assert finished, "the replay waited without limit for a lock on accounts"
    assert len(errors) == 1 and isinstance(errors[0], StoreError), errors
    assert "constraint known" in str(errors[0]) and "lock timeout" in str(errors[0])
    assert query(pg, _SHADOW_KEYS) == []


def test_keys_to_a_table_outside_keep_not_valid_as_they_were(pg: Pipeline) -> None:
    _accounts(pg)
    pg.execute(
        "ALTER TABLE last_deposit ADD CONSTRAINT loose FOREIGN KEY (tenant) "
        "REFERENCES accounts NOT VALID"
    )
    before = query(pg, _KEYS)
    assert [valid for *_, valid in before] == [True, False]

    replay_twice(pg)

    assert query(pg, _KEYS) == before


def test_a_failed_rebuild_drops_its_shadow_s_keys_to_tables_outside(pg: Pipeline) -> None:
    _accounts(pg)

    with pytest.raises(RuntimeError, match="stopped before the swap"):
        pg.replayer("last_deposit", hooks=FailBeforeSwap()).run(ReplayOptions())

    assert "last_deposit__rebuild" in pg.tables()  # left for the next replay to drop
    assert query(pg, _SHADOW_KEYS) == []
    pg.execute("DELETE FROM last_deposit WHERE account = 'acct-3'")
    pg.execute("DELETE FROM accounts WHERE account = 'acct-3'")  # nothing else refers to it
    assert pg.replayer("last_deposit").plan(ReplayOptions()).warnings == []


def test_a_shadow_left_with_a_key_to_a_table_outside_is_named_by_the_plan(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    _accounts(pg)
    # As a killed replay would leave it: nothing ran on the way out.
    monkeypatch.setattr(replay_rebuild, "pg_drop_outside_keys_or_warn", lambda *a, **k: None)
    with pytest.raises(RuntimeError):
        pg.replayer("last_deposit", hooks=FailBeforeSwap()).run(ReplayOptions())
    assert query(pg, _SHADOW_KEYS) == [("known__rebuild",)]

    warnings = pg.replayer("last_deposit").plan(ReplayOptions()).warnings

    assert any(
        "last_deposit__rebuild" in w and "known__rebuild to accounts" in w and "--cleanup" in w
        for w in warnings
    ), warnings
    assert pg.replayer("last_deposit").cleanup() == ["last_deposit__rebuild"]
    pg.execute("DELETE FROM last_deposit WHERE account = 'acct-3'")
    pg.execute("DELETE FROM accounts WHERE account = 'acct-3'")


def test_the_swap_locks_a_referencing_table_before_the_live_one(pg: Pipeline) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("CREATE TABLE statements (account text REFERENCES last_deposit (account), n int)")
    pg.execute("INSERT INTO statements SELECT account, 0 FROM last_deposit")
    app = psycopg.connect(_dsn(pg))
    wrote = threading.Event()

    class AppWritesStatements(ReplayHooks):
        def before_swap(self) -> None:
            app.execute("UPDATE statements SET n = 1")  # open: ROW EXCLUSIVE on statements
            wrote.set()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            pg.replayer("last_deposit", hooks=AppWritesStatements()).run(ReplayOptions())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert wrote.wait(30)
        waiting = (
            "SELECT count(*) FROM pg_locks WHERE NOT granted "
            "AND relation = to_regclass('statements')"
        )
        with psycopg.connect(_dsn(pg), autocommit=True) as monitor:
            while monitor.execute(waiting).fetchone() == (0,):  # the swap waits for it
                assert worker.is_alive(), errors
        app.execute("SET LOCAL lock_timeout = '500ms'")  # below deadlock_timeout
        # The application reads the live model: the swap must not hold it meanwhile.
        assert app.execute("SELECT count(*) FROM last_deposit").fetchone() == (7,)
        app.commit()
    finally:
        app.rollback()
        app.close()
        worker.join()
    assert errors == []
    assert query(pg, "SELECT DISTINCT n FROM statements") == [(1,)]


def _short_lock_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [
        ("_SWAP_LOCK_TIMEOUT_MS", 200),
        ("_SWAP_ATTEMPTS", 2),
        ("_DROP_LOCK_TIMEOUT_MS", 200),
        ("_DROP_ATTEMPTS", 2),
    ]:
        monkeypatch.setattr(replay_rebuild, name, value)


def test_an_old_table_whose_drop_waits_for_a_table_outside_is_left_then_dropped_later(
    pg: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An application's open transaction that read ``accounts`` (ACCESS SHARE) lets the
    rebuild add and validate its key and swap, but not drop the old table: DROP TABLE needs
    ACCESS EXCLUSIVE on the table its foreign key references."""
    _accounts(pg)
    pg.execute("UPDATE last_deposit SET amount = 0")  # the live model before the rebuild
    rebuilt = {account: payload["amount"] for _, account, _, payload in EVENTS}
    _short_lock_waits(monkeypatch)
    config = str(pipeline_config(tmp_path, pg))
    replay_cli = ["replay", "last_deposit", "--config", config]
    results = []
    app = psycopg.connect(_dsn(pg))
    pid = f"pid {app.info.backend_pid}"
    try:
        app.execute("SELECT count(*) FROM accounts")  # its transaction stays open
        worker = threading.Thread(target=lambda: results.append(run_cli([*replay_cli, "--yes"])))
        worker.start()
        worker.join(30)
        finished = not worker.is_alive()
        held = run_cli([*replay_cli, "--cleanup"]) if finished else None  # still held
    finally:
        app.rollback()
        app.close()
    worker.join()

    assert finished, "dropping the old table waited without limit for a lock on accounts"
    [done] = results
    assert done.exit_code == 0, done.output
    assert "rebuilt and swapped in" in done.stdout
    assert "last_deposit__old" in done.stdout and "--cleanup" in done.stdout, done.stdout
    assert "accounts" in done.stdout, done.stdout
    assert "last_deposit__old" in done.stderr and pid in done.stderr, done.stderr
    assert {k: r["amount"] for k, r in pg.rows(last_deposit).items()} == rebuilt
    # Left empty: its key refuses no delete on accounts.
    assert query(pg, "SELECT count(*) FROM last_deposit__old") == [(0,)]
    pg.execute("DELETE FROM last_deposit WHERE account = 'acct-3'")
    pg.execute("DELETE FROM accounts WHERE account = 'acct-3'")
    pg.execute("INSERT INTO accounts VALUES ('acct-3')")  # its events rebuild it again
    assert held is not None and held.exit_code == 1, held.output
    assert "last_deposit__old" in held.stderr and pid in held.stderr, held.stderr

    dry = run_cli([*replay_cli, "--dry-run"])
    assert "left over by an earlier replay, will be dropped: last_deposit__old" in dry.stdout
    summary = pg.replayer("last_deposit").run(ReplayOptions())
    assert summary.left_behind == [] and "last_deposit__old" not in pg.tables()


_NOTE_DDL = """
CREATE TABLE ddl_seen (statement text, swap_locked boolean);
CREATE FUNCTION note_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO ddl_seen SELECT current_query(), EXISTS (
    SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation'
       AND mode = 'AccessExclusiveLock' AND relation = to_regclass('last_deposit'));
END $$;
CREATE EVENT TRIGGER note_ddl ON ddl_command_end EXECUTE FUNCTION note_ddl();
"""


def _late_key_statements(pg: Pipeline) -> list[tuple[str, bool]]:
    """The statements that added or validated the key ``late`` on the shadow, and whether
    the session held the swap's lock on the live table then (noted by an event trigger)."""
    return query(
        pg,
        "SELECT statement, swap_locked FROM ddl_seen WHERE position('late__rebuild' IN "
        "statement) > 0 AND statement ~ '(ADD|VALIDATE) CONSTRAINT'",
    )


def _accounts_and_ddl_notes(pg: Pipeline) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("CREATE TABLE accounts (account text PRIMARY KEY)")
    pg.execute("INSERT INTO accounts SELECT 'acct-' || n FROM generate_series(0, 9) n")
    pg.execute(_NOTE_DDL)


_ADD_LATE = "ALTER TABLE last_deposit ADD CONSTRAINT late FOREIGN KEY (account) REFERENCES accounts"
_LATE_VALID = (
    "SELECT convalidated FROM pg_constraint "
    "WHERE conrelid = 'last_deposit'::regclass AND conname = 'late'"
)


def test_a_key_to_a_table_outside_made_during_the_rebuild_is_validated_before_the_swap(
    pg: Pipeline,
) -> None:
    _accounts_and_ddl_notes(pg)

    class AppAddsKey(ReplayHooks):
        def before_swap(self) -> None:  # once the shadow is filled and its keys carried
            pg.execute(_ADD_LATE)

    pg.replayer("last_deposit", hooks=AppAddsKey()).run(ReplayOptions())

    assert query(pg, _LATE_VALID) == [(True,)]
    seen = _late_key_statements(pg)
    assert any("VALIDATE CONSTRAINT" in statement for statement, _ in seen), seen
    assert [s for s, swap_locked in seen if swap_locked] == []
    assert not any(t.endswith(("__rebuild", "__old")) for t in pg.tables())


def test_a_key_to_a_table_outside_made_as_the_swap_starts_is_validated_outside_it(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Made after the last look before the swap: the swap finds it under its lock, rolls
    back, adds it as the others and swaps again."""
    _accounts_and_ddl_notes(pg)
    replayer = pg.replayer("last_deposit")
    carry_late_keys = replayer._carry_late_keys

    def then_app_adds_key() -> None:
        carry_late_keys()
        pg.execute(_ADD_LATE)

    monkeypatch.setattr(replayer, "_carry_late_keys", then_app_adds_key)
    replayer.run(ReplayOptions())

    assert query(pg, _LATE_VALID) == [(True,)]
    seen = _late_key_statements(pg)
    assert any("VALIDATE CONSTRAINT" in statement for statement, _ in seen), seen
    assert [s for s, swap_locked in seen if swap_locked] == []


def test_a_swap_that_keeps_finding_new_keys_to_tables_outside_gives_up_naming_them(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each key found under the swap's lock rolls it back to add the key outside it: an
    application that adds one more every time would keep the replay going round."""
    _accounts_and_ddl_notes(pg)
    replayer = pg.replayer("last_deposit")
    carry_late_keys = replayer._carry_late_keys
    add_outside_keys = replay_rebuild.pg_add_outside_keys
    made: list[str] = []

    def app_adds_key() -> None:
        made.append(f"late_{len(made)}")
        pg.execute(
            f"ALTER TABLE last_deposit ADD CONSTRAINT {made[-1]} FOREIGN KEY (account) "
            "REFERENCES accounts"
        )

    def carry_then_app_adds_key() -> None:
        carry_late_keys()
        app_adds_key()

    def add_then_app_adds_another(*args: object, **kwargs: object) -> None:
        add_outside_keys(*args, **kwargs)  # type: ignore[arg-type]
        if len(made) < 50:
            app_adds_key()

    monkeypatch.setattr(replayer, "_carry_late_keys", carry_then_app_adds_key)
    monkeypatch.setattr(replay_rebuild, "pg_add_outside_keys", add_then_app_adds_another)
    with pytest.raises(StoreError) as failed:
        replayer.run(ReplayOptions())

    assert len(made) < 50, made  # it gave up while the application still made them
    assert made[-1] in str(failed.value), str(failed.value)
