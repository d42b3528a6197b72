"""Schema migrations of readmodel's own tables in a read store (Alembic, ``outbox/migrations/``).

The event log, checkpoints, parked events and invalidations are created and upgraded
here, never by ``create_all``; the read models' own tables stay with the store. The
revision is kept in ``rm_alembic_version`` so that a service's or user's own Alembic
history in the same database is left alone.

Upgrades serialize across processes: on PostgreSQL under the advisory lock that every
readmodel DDL takes (:data:`outbox.schema.DDL_LOCK`), on SQLite under the write lock
(``BEGIN IMMEDIATE``). On PostgreSQL their table locks are waited for a bounded time, then
retried (:mod:`outbox.migrate_locks`). A database whose tables an earlier release created without
migrations is adopted: its columns are checked, the missing tables are created, and it
is stamped at the baseline revision before the later revisions run.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import sqlalchemy as sa
import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.exc import SQLAlchemyError

from config import Settings
from outbox import migrate_locks
from outbox.db import (
    create_engine,
    describe_db_error,
    engine_kind,
    engine_location,
    sqlalchemy_url,
)
from outbox.errors import SchemaError, SchemaOutdated, StoreError, read_store_at
from outbox.migrate_locks import LOCK_BACKOFF, LOCK_RETRIES, LOCK_TIMEOUT
from outbox.schema import DDL_LOCK

VERSION_TABLE = "rm_alembic_version"
BASELINE = "0001"
AGAIN = "run migrate again (--lock-timeout waits longer)"
"""What :class:`MigrationBlocked` advises once the lock is free (``readmodel migrate``)."""
START_AGAIN = "start again, or run `readmodel migrate` first (its --lock-timeout waits longer)"
"""Its advice to a process that migrates as it starts (:meth:`EventLog.create_tables`)."""
_SCRIPTS = Path(__file__).with_name("migrations")

log = structlog.get_logger("readmodel.migrate")


class MigrationBlocked(StoreError):
    """A migration gave up waiting for a table lock (PostgreSQL), naming the table and the
    sessions holding it."""


@dataclass(frozen=True, slots=True)
class Migration:
    """What :func:`upgrade` did to one database."""

    before: str | None
    after: str
    adopted: bool = False


def alembic_config(**attributes: object) -> Config:
    """An Alembic config for readmodel's scripts, built in code (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS).replace("%", "%%"))
    config.attributes["version_table"] = VERSION_TABLE
    config.attributes.update(attributes)
    return config


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The revision this readmodel needs."""
    revision = _scripts().get_current_head()
    assert revision is not None
    return revision


def known_tables() -> dict[str, sa.Table]:
    """Every table the revisions create, by name, as the revisions define them."""
    metadata = sa.MetaData()
    found: dict[str, sa.Table] = {}
    for script in reversed(list(_scripts().walk_revisions())):
        for table in script.module.tables(metadata):
            found[table.name] = table
    return found


def current(engine: sa.Engine, *, store: str | None = None) -> str | None:
    """The database's revision, or None when it has never been migrated (or, a SQLite
    file, does not exist: it is not created by asking). ``store``: its name in messages
    (:meth:`config.Settings.store_label`), here and in the functions below."""
    if absent(engine.url):
        return None
    try:
        with engine.connect() as conn:
            return _current(conn)
    except SQLAlchemyError as exc:
        raise _store_error(engine, "cannot read the schema revision", exc, store) from exc


def absent(url: sa.URL) -> bool:
    """Whether ``url`` names a SQLite file that is not there (connecting would create it)."""
    database = url.database
    return (
        url.get_backend_name() == "sqlite"
        and bool(database)
        and database != ":memory:"
        and not database.startswith("file:")
        and not Path(database).exists()
    )


def check(engine: sa.Engine, *, store: str | None = None) -> None:
    """Raise :class:`SchemaOutdated` unless the database is at :func:`head`."""
    revision = current(engine, store=store)
    if revision != head():
        raise SchemaOutdated(_url(engine), revision, head(), newer=is_newer(revision), store=store)


def is_newer(revision: str | None) -> bool:
    """Whether ``revision`` is one this readmodel does not know (a newer one wrote it)."""
    return revision is not None and _unknown(revision)


def upgrade(
    engine: sa.Engine,
    revision: str = "head",
    *,
    lock_timeout: float = LOCK_TIMEOUT,
    lock_retries: int = LOCK_RETRIES,
    retry_backoff: float = LOCK_BACKOFF,
    remedy: str = AGAIN,
    store: str | None = None,
) -> Migration:
    """Bring the database to ``revision`` (default: head); safe when processes race.

    On PostgreSQL every lock the migration waits for is bounded by ``lock_timeout`` seconds
    (``0``: unbounded), so that queries queued behind its DDL do not wait for long: on a
    timeout it rolls back, logs who holds the table, waits ``retry_backoff`` seconds
    (doubling) and tries again, ``lock_retries`` times; then raises
    :class:`MigrationBlocked` naming the table and the sessions holding it, then
    ``remedy``. A deadlock
    (PostgreSQL cancelled the migration's wait) is retried alike. ``lock_timeout`` past
    PostgreSQL's largest (:data:`~outbox.migrate_locks.MAX_LOCK_TIMEOUT`) is a ``ValueError``."""
    migrate_locks.check_lock_timeout(lock_timeout)
    attempt = 0
    reasons: list[str] = []
    while True:
        attempt += 1
        try:
            return _upgrade(engine, revision, lock_timeout, store)
        except _GaveUp as gave_up:
            table, reason = gave_up.table, gave_up.reason
        except SQLAlchemyError as exc:
            raise _store_error(engine, "migration failed", exc, store) from exc
        reasons.append(reason)
        held_by = migrate_locks.holders(engine, table)
        if attempt > lock_retries:
            raise MigrationBlocked(
                _blocked(engine, table, held_by, reasons, lock_timeout, store) + f", then {remedy}"
            )
        delay = retry_backoff * 2 ** (attempt - 1)
        log.warning(
            "migration waited for a lock; retrying",
            url=_url(engine),
            table=table,
            held_by=[holder.describe() for holder in held_by],
            reason=reason,
            attempt=attempt,
            lock_timeout=lock_timeout,
            retry_in=delay,
        )
        time.sleep(delay)


def _upgrade(engine: sa.Engine, revision: str, lock_timeout: float, store: str | None) -> Migration:
    try:
        with _migration_transaction(engine, lock_timeout) as conn:
            before = _current(conn)
            if before is not None and _unknown(before):
                raise SchemaError(
                    f"the {_where(engine, store)} is at revision {before}, which this "
                    f"readmodel (head {head()}) does not know: a newer readmodel migrated it"
                )
            adopted = before is None and _adopt(conn, engine, store)
            command.upgrade(alembic_config(connection=conn), revision)
            after = _current(conn)
    except CommandError as exc:
        raise _store_error(engine, "migration failed", exc, store) from exc
    assert after is not None
    if before != after:
        log.info("read store migrated", url=_url(engine), before=before, after=after)
    return Migration(before, after, adopted)


def offline_sql(dialect: str, revision: str = "head") -> str:
    """The DDL from an empty database to ``revision`` for ``dialect``, without a database."""
    buffer = io.StringIO()
    config = alembic_config(dialect=dialect)
    config.output_buffer = buffer
    command.upgrade(config, revision, sql=True)
    return buffer.getvalue()


def store_urls(settings: Settings) -> dict[str, str]:
    """Every SQL store holding readmodel's tables: ``{"default": url, extra stores...}``."""
    urls = {"default": settings.store.url}
    for name, store in settings.stores.items():
        if store.url not in urls.values() and _is_sql(store.url):
            urls[name] = store.url
    return urls


def any_store_absent(settings: Settings) -> bool:
    """Whether a SQL store of ``settings`` is a SQLite file that is not there yet."""
    return any(absent(sqlalchemy_url(url)) for url in store_urls(settings).values())


def check_stores(settings: Settings) -> None:
    """:func:`check` every store of ``settings``; raises for the first one not at head."""
    for name, url in store_urls(settings).items():
        with engine_for(url) as engine:
            check(engine, store=settings.store_label(name))


@contextmanager
def engine_for(url: str) -> Iterator[sa.Engine]:
    """A short-lived engine for one migration or check."""
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


class _GaveUp(Exception):
    """PostgreSQL gave up the migration's wait for a lock on ``table`` (``reason``: see
    :func:`~outbox.migrate_locks.lock_blocked`); the transaction is rolled back."""

    def __init__(self, reason: str, table: str | None) -> None:
        super().__init__(f"{reason} waiting for {table or 'a table'}")
        self.reason = reason
        self.table = table


@contextmanager
def _migration_transaction(engine: sa.Engine, lock_timeout: float) -> Iterator[sa.Connection]:
    with engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        interval = min(0.1, lock_timeout / 3) if lock_timeout > 0 else 0.1
        watch = migrate_locks.LockWatch(engine, conn, interval)
        try:
            with watch, conn.begin():
                if conn.dialect.name == "postgresql":
                    # Another migrate may hold it for as long as its own waits: unbounded,
                    # whatever lock_timeout the database or the role sets.
                    migrate_locks.set_lock_timeout(conn, 0)
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(DDL_LOCK)))
                    migrate_locks.set_lock_timeout(conn, lock_timeout)
                yield conn
        except SQLAlchemyError as exc:
            reason = migrate_locks.lock_blocked(exc)
            if reason is None:
                raise
            raise _GaveUp(reason, watch.table or migrate_locks.table_of(exc)) from exc


def _blocked(
    engine: sa.Engine,
    table: str | None,
    held_by: list[migrate_locks.Holder],
    reasons: list[str],
    lock_timeout: float,
    store: str | None,
) -> str:
    what = f"table {table}" if table else "a table"
    ends = []
    if timeouts := reasons.count("lock_timeout"):
        ends.append(
            f"{_times(timeouts)} after lock_timeout {lock_timeout:g}s, so that the pipeline's "
            f"queries do not queue behind it"
        )
    if deadlocks := reasons.count("deadlock"):
        ends.append(f"{_times(deadlocks)} in a deadlock PostgreSQL broke")
    message = (
        f"migration of the {_where(engine, store)} gave up: it waited {_times(len(reasons))} "
        f"for a lock on {what}, each wait ended by PostgreSQL ({'; '.join(ends)})"
    )
    if held_by:
        sessions = ", ".join(holder.describe() for holder in held_by)
        message += f"; held by {sessions}: end that transaction"
    return message


def _times(count: int) -> str:
    return "once" if count == 1 else "twice" if count == 2 else f"{count} times"


def _current(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()


def _unknown(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is None
    except CommandError:
        return True


def _adopt(conn: sa.Connection, engine: sa.Engine, store: str | None) -> bool:
    """Check tables created before migrations; True when there are some to adopt."""
    inspector = sa.inspect(conn)
    expected = known_tables()
    present = [name for name in inspector.get_table_names() if name in expected]
    if not present:
        return False
    for name in present:
        want = expected[name]
        have = {column["name"] for column in inspector.get_columns(name)}
        missing = sorted({c.name for c in want.columns} - have)
        extra = sorted(have - {c.name for c in want.columns})
        if missing or extra:
            raise SchemaError(
                f"table {name} in the {_where(engine, store)} is not readmodel's: "
                f"missing columns {missing or 'none'}, unexpected columns {extra or 'none'}"
            )
        key = inspector.get_pk_constraint(name).get("constrained_columns") or []
        if sorted(key) != sorted(c.name for c in want.primary_key.columns):
            raise SchemaError(
                f"table {name} in the {_where(engine, store)} has primary key {key}, "
                f"readmodel's has {[c.name for c in want.primary_key.columns]}"
            )
    log.warning(
        "read store has readmodel tables from before migrations: adopting them",
        url=_url(engine),
        tables=sorted(present),
        stamp=BASELINE,
    )
    return True


def _is_sql(url: str) -> bool:
    try:
        return engine_kind(url) in ("postgresql", "sqlite")
    except ValueError:
        return False


def _url(engine: sa.Engine) -> str:
    """Where the store is, as readmodel logs it: no user, password or DSN query."""
    return engine_location(engine)


def _where(engine: sa.Engine, store: str | None) -> str:
    """``read store [NAME] at LOCATION``, as messages name it."""
    return read_store_at(_url(engine), store)


def _store_error(engine: sa.Engine, what: str, exc: Exception, store: str | None) -> StoreError:
    reason = describe_db_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
    return StoreError(f"{what} on the {_where(engine, store)}: {reason}")
