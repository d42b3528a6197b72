"""``readmodel migrate`` on PostgreSQL behind a transaction left open on a readmodel table:
its ALTER waits a bounded time (``lock_timeout``), so that the pipeline's queries queued
behind it move on; it retries, then fails naming the table and the session holding it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from outbox.db import create_engine
from outbox.log import EventLog
from outbox.migrate import Migration, MigrationBlocked, current, head, upgrade
from outbox.migrate_locks import LockWatch, holders, lock_blocked, set_lock_timeout, table_of
from outbox.schema import DDL_LOCK
from projections.shadow_blocked import blocked_on
from projections.shadow_drop import drop_bounded
from tests.cli_helpers import run_cli, write_config
from tests.conftest import PG_ADMIN

TABLE = "rm_blocked_aggregates"  # revision 0004 alters it


@pytest.fixture
def at_0003(pg_database: Callable[[], str]) -> Iterator[tuple[str, sa.Engine]]:
    url = pg_database()
    engine = create_engine(url)
    upgrade(engine, "0003")
    yield url, engine
    engine.dispose()


def _connect(url: str, **options: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(
        sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
        **options,
    )


def _hold(url: str) -> tuple[psycopg.Connection[Any], int]:
    """A second session with a transaction left open after reading the table (its ACCESS
    SHARE lock is what an ALTER TABLE waits for), and its pid."""
    holder = _connect(url)
    pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    holder.execute(f"SELECT count(*) FROM {TABLE}")
    return holder, pid


def _upgrading(engine: sa.Engine, **options: Any) -> tuple[Callable[[], None], list[Any]]:
    """``upgrade(engine, **options)`` to run in a thread, and the list its outcome (the
    migration or the exception) goes to."""
    outcome: list[Any] = []

    def migrate() -> None:
        try:
            outcome.append(upgrade(engine, **options))
        except Exception as exc:  # reported by the test
            outcome.append(exc)

    return migrate, outcome


def _waits(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "migration waited for a lock; retrying"]


def test_migrate_gives_up_naming_the_table_and_the_session_that_holds_it(
    at_0003: tuple[str, sa.Engine],
) -> None:
    url, engine = at_0003
    holder, pid = _hold(url)
    try:
        with capture_logs() as logs, pytest.raises(MigrationBlocked) as blocked:
            upgrade(engine, lock_timeout=0.2, lock_retries=2, retry_backoff=0.01)
        assert current(engine) == "0003"  # rolled back
    finally:
        holder.rollback()
        holder.close()

    message = str(blocked.value)
    assert f"waited 3 times for a lock on table {TABLE}, each wait ended by PostgreSQL " in message
    assert "(3 times after lock_timeout 0.2s, so that" in message, message
    assert "deadlock" not in message, message
    assert f"held by pid {pid} (AccessShareLock, idle in transaction" in message, message
    waits = _waits(logs)
    assert [(w["table"], w["attempt"]) for w in waits] == [(TABLE, 1), (TABLE, 2)]
    assert all(f"pid {pid} " in w["held_by"][0] for w in waits), waits
    assert upgrade(engine) == Migration("0003", head())  # once the transaction ended


def test_queries_queued_behind_a_waiting_alter_move_on_and_the_retry_succeeds(
    at_0003: tuple[str, sa.Engine],
) -> None:
    url, engine = at_0003
    holder, _ = _hold(url)
    migrate, outcome = _upgrading(engine, lock_timeout=1.0, lock_retries=20, retry_backoff=0.1)

    watcher = _connect(url, autocommit=True)
    reader = _connect(url, autocommit=True)
    reader.execute("SET statement_timeout = '60s'")  # generous: a stalled read fails
    with capture_logs() as logs:
        thread = threading.Thread(target=migrate)
        thread.start()
        try:
            # The migration's ALTER waits for the holder's lock ...
            _wait_for_alter(watcher)
            # ... a query of the pipeline on the table queues behind it, and moves on once
            # the ALTER gives up its wait (without lock_timeout: when the holder ends).
            assert reader.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (0,)
            assert thread.is_alive() and outcome == []
        finally:
            holder.rollback()  # the holder ends: the next attempt succeeds
            holder.close()
            thread.join(timeout=120)
            watcher.close()
            reader.close()

    assert outcome == [Migration("0003", head())]
    waits = _waits(logs)
    assert waits and waits[0]["table"] == TABLE  # its holders: the test above


def test_the_cli_exits_1_naming_what_blocks_it(
    at_0003: tuple[str, sa.Engine], tmp_path: Path
) -> None:
    url, engine = at_0003
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "store": {"url": url},
            "sources": {"shop": {"url": f"sqlite:///{tmp_path / 'shop.db'}"}},
            "broker": {"url": "redis://127.0.0.1:6379/15"},
        },
    )
    holder, pid = _hold(url)
    try:
        args = ["migrate", "--config", str(config), "--lock-timeout", "0.2"]
        result = run_cli([*args, "--lock-retries", "1", "--lock-backoff", "0.05"])
    finally:
        holder.rollback()
        holder.close()

    assert result.exit_code == 1, result.output
    error = result.stderr.splitlines()[-1]
    where = sa.make_url(url)  # its location only, no user
    location = f"postgresql://{where.host}:{where.port}/{where.database}"
    assert error.startswith(f"error: migration of the read store at {location} gave"), error
    assert f"lock on table {TABLE}" in result.stderr and f"pid {pid} " in result.stderr
    assert "waited twice for a lock" in result.stderr, result.stderr
    assert "retry_in=0.05" in result.stderr, result.stderr
    assert current(engine) == "0003"
    done = run_cli(["migrate", "--config", str(config)])
    assert done.exit_code == 0, done.output
    assert current(engine) == head()


def _wait_for_alter(watcher: psycopg.Connection[Any]) -> None:
    """Until this test's database shows the migration's ALTER waiting for a lock (other
    databases of the server may run the same migration at the same time)."""
    deadline = time.monotonic() + 60
    while not watcher.execute(
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE %s",
        (f"ALTER TABLE {TABLE}%",),
    ).fetchone():
        assert time.monotonic() < deadline, "the migration's ALTER never waited"
        time.sleep(0.02)


def test_lock_timeout_0_waits_whatever_the_databases_own_lock_timeout(
    at_0003: tuple[str, sa.Engine],
) -> None:
    url, engine = at_0003
    name = sa.make_url(url).database
    with _connect(url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE \"{name}\" SET lock_timeout = '100ms'")
    engine.dispose()  # new sessions take the database's setting
    holder, _ = _hold(url)
    migrate, outcome = _upgrading(engine, lock_timeout=0, lock_retries=0)

    watcher = _connect(url, autocommit=True)
    thread = threading.Thread(target=migrate)
    thread.start()
    try:
        _wait_for_alter(watcher)
        time.sleep(0.5)  # five times the database's lock_timeout: still waiting
        assert thread.is_alive() and outcome == [], outcome
    finally:
        holder.rollback()
        holder.close()
        thread.join(timeout=60)
        watcher.close()
    assert outcome == [Migration("0003", head())]


def test_a_deadlock_is_retried_like_a_lock_timeout(at_0003: tuple[str, sa.Engine]) -> None:
    """The holder, reading the table the ALTER waits for, then asks for the migration's DDL
    lock: PostgreSQL cancels the migration (40P01, it waited longest); it tries again."""
    url, engine = at_0003
    holder, pid = _hold(url)
    holder.execute("SET deadlock_timeout = '60s'")  # the migration's check finds the cycle
    migrate, outcome = _upgrading(engine, lock_timeout=30, lock_retries=1, retry_backoff=0.01)

    watcher = _connect(url, autocommit=True)
    with capture_logs() as logs:
        thread = threading.Thread(target=migrate)
        thread.start()
        try:
            _wait_for_alter(watcher)
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))  # after the cancel
        finally:
            holder.rollback()
            holder.close()
            thread.join(timeout=60)
            watcher.close()

    assert outcome == [Migration("0003", head())], outcome
    waits = _waits(logs)
    assert [(w["table"], w["reason"]) for w in waits] == [(TABLE, "deadlock")], waits


def test_a_migration_given_up_after_a_deadlock_says_so_not_lock_timeout(
    at_0003: tuple[str, sa.Engine],
) -> None:
    url, engine = at_0003
    holder, pid = _hold(url)
    holder.execute("SET deadlock_timeout = '60s'")  # the migration's check finds the cycle
    migrate, outcome = _upgrading(engine, lock_timeout=30, lock_retries=0)

    watcher = _connect(url, autocommit=True)
    thread = threading.Thread(target=migrate)
    thread.start()
    try:
        _wait_for_alter(watcher)
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))  # after the cancel
    finally:
        holder.rollback()
        holder.close()
        thread.join(timeout=60)
        watcher.close()

    [blocked] = outcome
    assert isinstance(blocked, MigrationBlocked), outcome
    message = str(blocked)
    assert f"waited once for a lock on table {TABLE}, each wait ended by PostgreSQL " in message
    # Then the holder, when it still holds the table as the migration looks (it got the
    # advisory lock the migration's rollback let go, and is idle in its transaction), or not.
    assert "(once in a deadlock PostgreSQL broke)" in message, message
    assert "then run migrate again" in message, message
    assert "lock_timeout" not in message, message
    assert current(engine) == "0003"


def test_the_table_named_is_the_one_waited_for_not_the_first_in_the_statement(
    at_0003: tuple[str, sa.Engine],
) -> None:
    url, engine = at_0003
    holder, _ = _hold(url)
    try:
        with engine.connect() as conn, conn.begin():
            set_lock_timeout(conn, 0.5)
            with LockWatch(engine, conn) as watch, pytest.raises(sa.exc.OperationalError) as exc:
                conn.exec_driver_sql(f"LOCK TABLE rm_checkpoints, {TABLE} IN ACCESS EXCLUSIVE MODE")
    finally:
        holder.rollback()
        holder.close()
    assert lock_blocked(exc.value)
    assert table_of(exc.value) == "rm_checkpoints"  # the statement's first table
    assert watch.table == TABLE


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "2147484"])
def test_the_cli_refuses_a_lock_timeout_postgresql_cannot_take(value: str, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
            "sources": {"shop": {"url": f"sqlite:///{tmp_path / 'shop.db'}"}},
            "broker": {"url": "redis://127.0.0.1:6379/15"},
        },
    )
    result = run_cli(["migrate", "--config", str(config), "--lock-timeout", value])
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.replace("│", " ").split())  # unwrapped from its box
    assert "Invalid value for '--lock-timeout'" in said, said
    assert "is 0 (no bound) to 2147483.647 seconds" in said, said
    assert not (tmp_path / "store.db").exists()


def test_a_starting_process_gives_up_telling_what_to_do(at_0003: tuple[str, sa.Engine]) -> None:
    """EventLog.create_tables (build_runtime, the demo) migrates with the same bounded lock
    waits: it fails with a clear error instead of hanging; the advice suits a start."""
    url, engine = at_0003
    log = EventLog(url)
    holder, pid = _hold(url)
    try:
        with pytest.raises(MigrationBlocked) as blocked:
            log.create_tables(lock_timeout=0.2, lock_retries=0)
    finally:
        holder.rollback()
        holder.close()
        log.close()
    message = str(blocked.value)
    assert f"lock on table {TABLE}" in message and f"pid {pid} " in message, message
    assert message.endswith(
        "end that transaction, then start again, or run `readmodel migrate` first "
        "(its --lock-timeout waits longer)"
    ), message


def test_a_lock_in_another_database_on_a_table_with_the_same_oid_holds_nothing(
    pg_database: Callable[[], str],
) -> None:
    """Two databases cloned from one template have their tables under the same oids: a
    session reading ``t`` in one is no holder of ``t`` in the other (``pg_locks`` is the
    server's)."""
    template = pg_database()
    with _connect(template, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    clone = f"{sa.make_url(template).database}_clone"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{clone}" TEMPLATE "{sa.make_url(template).database}"')
    engine = create_engine(sa.make_url(template).set(database=clone).render_as_string(False))
    own = create_engine(template)
    holder = _connect(template)
    try:
        pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        holder.execute("SELECT count(*) FROM t")
        oid = "SELECT 't'::regclass::oid"
        with engine.connect() as conn, own.connect() as there:
            assert conn.exec_driver_sql(oid).scalar() == there.exec_driver_sql(oid).scalar()
        assert holders(engine, "t") == []
        assert [h.pid for h in holders(own, "t")] == [pid]
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()
        own.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{clone}" WITH (FORCE)')


def test_a_lock_on_a_table_outside_the_search_path_is_named_with_its_holder(
    pg_database: Callable[[], str],
) -> None:
    """A projection's table in a schema of its own (``schema="sales"``) is not visible by its
    bare name: the replay's drop names it schema-qualified, and finds who holds it."""
    url = pg_database()
    with _connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA sales")
        conn.execute("CREATE TABLE sales.orders (id int)")
        conn.execute("CREATE TABLE public.orders (id int)")  # the bare name's, unlocked
    engine = create_engine(url)
    holder = _connect(url)
    try:
        pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        holder.execute("SELECT count(*) FROM sales.orders")
        assert [h.pid for h in holders(engine, "sales.orders")] == [pid]
        assert holders(engine, "orders") == []
        blocked = drop_bounded(engine, ["sales.orders"], lock_timeout_ms=200, attempts=1)
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()
    assert blocked is not None
    assert blocked.waited_for == ["sales.orders"], blocked
    assert f"waiting for a lock on sales.orders, held by pid {pid} " in blocked.describe()


@pytest.mark.parametrize(
    "table",
    [
        '"Lock Schema"."rm_held"',
        '"lock schema".rm_held',
        '"public"."rm_held"',
        '"rm_""Held"',
        '"lock.schema"."rm_a.b"',
        "lock$schema.rm_held$1",  # unquoted, as SQLAlchemy writes a name with a $
        "rm_hé",  # unquoted: PostgreSQL takes any letter
        "schéma.rm_held",
    ],
)
def test_a_quoted_name_keeps_its_schema_and_its_holder_is_named(
    at_0003: tuple[str, sa.Engine], table: str
) -> None:
    """Told from the statement (no LockWatch): a quoted schema (capitals, a space, a dot) or
    table name, or an unquoted one with a ``$`` or a letter beyond ASCII, is the name
    ``holders`` looks up, so the session holding it is named."""
    url, engine = at_0003
    with engine.begin() as conn:
        for schema in ("Lock Schema", "lock schema", "lock.schema", "lock$schema", "schéma"):
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        conn.exec_driver_sql(f"CREATE TABLE {table} (id int)")
    holder = _connect(url)
    pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    holder.execute(f"SELECT count(*) FROM {table}")
    try:
        with engine.connect() as conn, conn.begin():
            set_lock_timeout(conn, 0.2)
            with pytest.raises(sa.exc.OperationalError) as exc:
                conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        assert lock_blocked(exc.value) == "lock_timeout"
        assert table_of(exc.value) == table
        blocked = blocked_on(engine, "lock_timeout", None, [table_of(exc.value) or ""], 200)
    finally:
        holder.rollback()
        holder.close()
    assert blocked.waited_for == [table]
    message = blocked.describe()
    assert f"waiting for a lock on {table}, held by pid {pid} (AccessShareLock" in message, message
